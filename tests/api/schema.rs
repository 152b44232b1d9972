#[test]
fn schema_graphql_matches_the_sdl_the_code_exports() {
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
            .expect("schema.graphql exists");
    let exported = palaver::graphql::sdl();
    assert!(
        checked_in == exported,
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql`"
    );
}
