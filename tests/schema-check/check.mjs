// Flags breaking changes between two GraphQL schemas: the contract integrators were last given
// (`baseline.graphql` beside this file) and the one the code exports (`schema.graphql`).
//
// Usage: node check.mjs <previous.graphql> <current.graphql>
// Exits 1 if any change is BREAKING for existing clients, 0 otherwise; prints every breaking and
// dangerous change, and a count of the safe ones.
//
// `node check.mjs --self-test <schema.graphql>` shows that the check can fail: a field removed
// from the query root is breaking, also when the roots were renamed in between.
//
// The comparison is graphql-inspector's (`@graphql-inspector/core`, the engine behind
// `graphql-inspector diff`), with one step before it: root types renamed between the two
// (`QueryRoot` to `Query`, say) are renamed in the previous schema too, so that the fields of
// the roots are compared one by one instead of the whole root being reported as removed. An
// operation names its root type only in a fragment spread on it, or when it reads `__typename`
// at the root, so a rename is reported as DANGEROUS, not BREAKING.
import { readFileSync } from 'node:fs';
import { buildSchema, parse, print, visit } from 'graphql';
import { CriticalityLevel, diff } from '@graphql-inspector/core';

const ROOTS = [
  ['query', (schema) => schema.getQueryType()],
  ['mutation', (schema) => schema.getMutationType()],
  ['subscription', (schema) => schema.getSubscriptionType()],
];

/** The previous SDL with its root types renamed to the current ones, and what was renamed. */
function withCurrentRootNames(previousSdl, previous, current) {
  const renames = new Map();
  for (const [operation, root] of ROOTS) {
    const from = root(previous)?.name;
    const to = root(current)?.name;
    // A name already taken by another type of the previous schema is no plain rename.
    if (from && to && from !== to && !previous.getType(to)) {
      renames.set(from, { to, operation });
    }
  }
  if (renames.size === 0) {
    return { sdl: previousSdl, renames };
  }
  const rename = (node) =>
    renames.has(node.name.value)
      ? { ...node, name: { ...node.name, value: renames.get(node.name.value).to } }
      : undefined;
  const document = visit(parse(previousSdl), {
    NamedType: rename,
    ObjectTypeDefinition: rename,
    ObjectTypeExtension: rename,
  });
  return { sdl: print(document), renames };
}

/** Every change from one SDL to another, root renames first, each with its level. */
async function compare(previousSdl, currentSdl) {
  const current = buildSchema(currentSdl);
  const { sdl, renames } = withCurrentRootNames(previousSdl, buildSchema(previousSdl), current);
  const changes = await diff(buildSchema(sdl), current);
  const report = [];
  for (const [from, { to, operation }] of renames) {
    report.push({
      level: CriticalityLevel.Dangerous,
      message: `Root ${operation} type renamed from ${from} to ${to}`,
      reason:
        `operations run unchanged; only a fragment spread on ${from} or client code that ` +
        `compares the root's __typename with "${from}" must say ${to}`,
    });
  }
  for (const change of changes) {
    report.push({
      level: change.criticality.level,
      message: change.message,
      reason: change.criticality.reason,
    });
  }
  return report;
}

/** The SDL with the query root's first field removed, and the roots renamed if `suffix` is set. */
function altered(sdl, { dropFirstQueryField, suffix }) {
  const schema = buildSchema(sdl);
  const queryName = schema.getQueryType().name;
  const roots = new Set(ROOTS.map(([, root]) => root(schema)?.name).filter(Boolean));
  const rename = (node) =>
    suffix && roots.has(node.name.value)
      ? { ...node, name: { ...node.name, value: node.name.value + suffix } }
      : undefined;
  return print(
    visit(parse(sdl), {
      NamedType: rename,
      ObjectTypeDefinition(node) {
        const renamed = rename(node) ?? node;
        return dropFirstQueryField && node.name.value === queryName
          ? { ...renamed, fields: renamed.fields.slice(1) }
          : renamed;
      },
    }),
  );
}

async function selfTest(schemaPath) {
  const sdl = readFileSync(schemaPath, 'utf8');
  const cases = [
    ['a query field removed', sdl, altered(sdl, { dropFirstQueryField: true })],
    [
      'a query field removed across a root rename',
      altered(sdl, { suffix: 'Root' }),
      altered(sdl, { dropFirstQueryField: true }),
    ],
  ];
  let failed = 0;
  for (const [name, previous, current] of cases) {
    const breaking = (await compare(previous, current)).filter(
      (change) => change.level === CriticalityLevel.Breaking,
    );
    if (breaking.length === 1) {
      console.log(`self-test: ${name}: caught (${breaking[0].message})`);
    } else {
      console.log(`self-test: ${name}: expected 1 breaking change, found ${breaking.length}`);
      failed += 1;
    }
  }
  console.log(`self-test: ${cases.length - failed} of ${cases.length} breaking changes caught`);
  return failed > 0 ? 1 : 0;
}

async function main() {
  if (process.argv[2] === '--self-test') {
    return selfTest(process.argv[3]);
  }
  const [previousPath, currentPath] = process.argv.slice(2);
  if (!previousPath || !currentPath) {
    console.error('usage: node check.mjs <previous.graphql> <current.graphql>');
    return 2;
  }
  const report = await compare(
    readFileSync(previousPath, 'utf8'),
    readFileSync(currentPath, 'utf8'),
  );
  const counts = { BREAKING: 0, DANGEROUS: 0, NON_BREAKING: 0 };
  for (const { level, message, reason } of report) {
    counts[level] += 1;
    if (level !== CriticalityLevel.NonBreaking) {
      console.log(`${level}: ${message}${reason ? `\n    ${reason}` : ''}`);
    }
  }
  console.log(
    `schema check: ${counts.BREAKING} breaking, ${counts.DANGEROUS} dangerous, ` +
      `${counts.NON_BREAKING} safe changes from ${previousPath} to ${currentPath}`,
  );
  return counts.BREAKING > 0 ? 1 : 0;
}

process.exitCode = await main();
