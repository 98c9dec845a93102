// The parity test's second JSON Schema implementation: ajv 8, draft 2020-12, strict mode.
// Usage: node ajv_validate.mjs SCHEMA_DIR < lines; each input line is {"schema": "<name>", "b64": "<raw bytes>"},
// each output line [verdict, errors]: "valid", "invalid" (with ajv's first errors) or "not_json" (as JSON.parse
// or a strict UTF-8 decoder refused the bytes, BOM kept, so not skipped).
import { readdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import Ajv2020 from "ajv/dist/2020.js";

const schemaDir = process.argv[2];
const ajv = new Ajv2020({ strict: true, allErrors: true });
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const validators = new Map(  // every schema compiled up front: strict mode refuses a schema it finds unclear
  readdirSync(schemaDir).filter((file) => file.endsWith(".schema.json")).map((file) => [
    file.slice(0, -".schema.json".length),
    ajv.compile(JSON.parse(readFileSync(`${schemaDir}/${file}`, "utf8"))),
  ]),
);

function verdict(name, raw) {
  let value;
  try {
    value = JSON.parse(utf8.decode(raw));
  } catch (error) {
    return ["not_json", [String(error.message).slice(0, 200)]];
  }
  const validate = validators.get(name);
  if (validate(value)) return ["valid", []];
  return ["invalid", validate.errors.slice(0, 3).map((e) => `${e.instancePath} ${e.message}`)];
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
const out = [];
for await (const line of lines) {
  if (!line) continue;
  const { schema, b64 } = JSON.parse(line);
  out.push(JSON.stringify(verdict(schema, Buffer.from(b64, "base64"))));
}
process.stdout.write(out.join("\n") + "\n");
