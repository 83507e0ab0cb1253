// Lints Cypher statements with Neo4j's own parser and semantic analysis.
// stdin: JSON array of {"name": str, "query": str}; stdout: JSON array of
// {"name", "message", "severity"} for every diagnostic except undeclared parameters
// (parameters are supplied at run time, not declared in a schema here).
import { lintCypherQuery } from '@neo4j-cypher/language-support';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const statements = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const problems = [];
for (const { name, query } of statements) {
  const { diagnostics } = lintCypherQuery(query, {});
  for (const d of diagnostics) {
    if (/^Parameter \$\w+ is not defined\.$/.test(d.message)) continue;
    problems.push({ name, message: d.message, severity: d.severity });
  }
}
process.stdout.write(JSON.stringify(problems));
