//! The schema as integrators read it: the exported SDL is current, the roots have the names every
//! GraphQL tool expects, and every element carries a description that says more than its name.
use serde_json::{Value, json};

use crate::helpers::*;

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

const DESCRIPTIONS: &str = r#"{ __schema {
    types {
      name kind description
      fields(includeDeprecated: true) { name description args { name description } }
      inputFields { name description }
      enumValues(includeDeprecated: true) { name description }
    }
} }"#;

/// The scalars the GraphQL specification itself defines: every client knows them, and the SDL
/// does not print them.
const SPEC_SCALARS: &[&str] = &["String", "Int", "Float", "Boolean", "ID"];

/// A name spelled as words: `createdAt` and `CREATED_AT` both read "created at".
fn as_words(name: &str) -> String {
    let mut words = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if c == '_' {
            words.push(' ');
            previous_lower = false;
        } else {
            if c.is_uppercase() && previous_lower {
                words.push(' ');
            }
            previous_lower = c.is_lowercase() || c.is_ascii_digit();
            words.extend(c.to_lowercase());
        }
    }
    words
}

/// Why an element's description falls short, if it does: missing, blank, or the name restated.
fn lacking(name: &str, description: &Value) -> Option<&'static str> {
    let Some(text) = description.as_str() else {
        return Some("no description");
    };
    let plain: String = text
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect();
    let plain = plain.split_whitespace().collect::<Vec<_>>().join(" ");
    let words = as_words(name);
    if plain.is_empty() {
        Some("a blank description")
    } else if plain == words || plain == format!("the {words}") || plain == format!("a {words}") {
        Some("a description that only restates the name")
    } else {
        None
    }
}

#[tokio::test]
async fn every_type_field_argument_enum_value_and_input_field_says_what_it_is() {
    let app = spawn_app().await;
    let response = app.gql(None, DESCRIPTIONS, json!({})).await;
    let types = response["data"]["__schema"]["types"]
        .as_array()
        .unwrap_or_else(|| panic!("introspection answered {response}"));
    let mut missing = Vec::new();
    let mut checked = 0;
    let mut check = |path: String, name: &str, description: &Value| {
        checked += 1;
        if let Some(why) = lacking(name, description) {
            missing.push(format!("{path}: {why}"));
        }
    };
    let list = |value: &Value| value.as_array().cloned().unwrap_or_default();
    for ty in types {
        let type_name = ty["name"].as_str().unwrap_or_default();
        // The introspection types are the specification's, described by it.
        if type_name.starts_with("__") || SPEC_SCALARS.contains(&type_name) {
            continue;
        }
        check(type_name.to_owned(), type_name, &ty["description"]);
        for field in list(&ty["fields"]) {
            let field_name = field["name"].as_str().unwrap_or_default();
            let path = format!("{type_name}.{field_name}");
            check(path.clone(), field_name, &field["description"]);
            for arg in list(&field["args"]) {
                let arg_name = arg["name"].as_str().unwrap_or_default();
                check(format!("{path}({arg_name})"), arg_name, &arg["description"]);
            }
        }
        for field in list(&ty["inputFields"]) {
            let field_name = field["name"].as_str().unwrap_or_default();
            check(
                format!("{type_name}.{field_name}"),
                field_name,
                &field["description"],
            );
        }
        for value in list(&ty["enumValues"]) {
            let value_name = value["name"].as_str().unwrap_or_default();
            check(
                format!("{type_name}.{value_name}"),
                value_name,
                &value["description"],
            );
        }
    }
    assert!(checked > 300, "only {checked} schema elements were found");
    assert!(
        missing.is_empty(),
        "{} schema elements need a description that says what they are:\n{}",
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn a_description_that_restates_the_name_is_caught() {
    assert_eq!(
        lacking("createdAt", &json!("Created at.")),
        Some("a description that only restates the name")
    );
    assert_eq!(
        lacking("ROOM_ADDED", &json!("Room added")),
        Some("a description that only restates the name")
    );
    assert_eq!(lacking("id", &json!(null)), Some("no description"));
    assert_eq!(lacking("id", &json!(" ")), Some("a blank description"));
    assert_eq!(
        lacking("createdAt", &json!("When the account was made.")),
        None
    );
}

#[tokio::test]
async fn the_root_types_are_named_query_mutation_and_subscription() {
    let app = spawn_app().await;
    let response = app
        .gql(
            None,
            "{ __typename __schema { queryType { name } mutationType { name } subscriptionType { name } } }",
            json!({}),
        )
        .await;
    let schema = &response["data"]["__schema"];
    assert_eq!(schema["queryType"]["name"], "Query", "{response}");
    assert_eq!(schema["mutationType"]["name"], "Mutation", "{response}");
    assert_eq!(
        schema["subscriptionType"]["name"], "Subscription",
        "{response}"
    );
    assert_eq!(response["data"]["__typename"], "Query");
    // A fragment spread on the root names it as the schema does.
    let alice = app.user("alice").await;
    let data = app
        .data(
            &alice.token,
            "{ ...Counts } fragment Counts on Query { unreadCount notificationUnreadCount }",
            json!({}),
        )
        .await;
    assert_eq!(data["unreadCount"], 0);
    let sdl = palaver::graphql::sdl();
    for old in [
        "QueryRoot",
        "MutationRoot",
        "SubscriptionRoot",
        "CoreMutation",
    ] {
        assert!(!sdl.contains(old), "the SDL still names {old}");
    }
}
