// The generated JSON Schemas as another language reads them: ajv (JSON Schema 2020-12) in strict
// mode, with ajv-formats for `date-time`, and nothing else configured. Run by
// tests/unit/test_contract_ajv.py: one process for every check.
//
// stdin:  {"root": "<schemas/jsonschema>", "cases": [{"name", "schema", "instance"}]}
//         (`schema`: a path relative to root without ".json", e.g. "event" or "api/agents.get.reply")
// stdout: {"ajv": version, "compiled": [schema], "failed": {schema: error}, "warnings": [text],
//          "results": [{"name", "valid", "errors": [{instancePath, schemaPath, keyword, message}]}]}
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const job = JSON.parse(fs.readFileSync(0, "utf8"));
const warnings = [];
const note = (...args) => warnings.push(args.join(" "));
// strict: true turns on every strict check (unknown keywords and formats, types, tuples,
// required); a warning ajv would only log is reported too, so the test can fail on it.
const ajv = new Ajv2020({ strict: true, allErrors: true, logger: { log() {}, warn: note, error: note } });
addFormats(ajv);

function schemaFiles(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return schemaFiles(full);
    return entry.name.endsWith(".json") ? [full] : [];
  });
}

const validators = new Map();
const failed = {};
for (const file of schemaFiles(job.root).sort()) {
  const name = path.relative(job.root, file).split(path.sep).join("/").replace(/\.json$/, "");
  try {
    validators.set(name, ajv.compile(JSON.parse(fs.readFileSync(file, "utf8"))));
  } catch (err) {
    failed[name] = String(err.message || err);
  }
}

const results = job.cases.map(({ name, schema, instance }) => {
  const validate = validators.get(schema);
  if (!validate) return { name, valid: null, errors: [{ message: `no compiled schema ${schema}` }] };
  const valid = validate(instance);
  const errors = (validate.errors || []).map(({ instancePath, schemaPath, keyword, message }) => ({
    instancePath, schemaPath, keyword, message,
  }));
  return { name, valid, errors };
});

const version = createRequire(import.meta.url)("ajv/package.json").version;
process.stdout.write(JSON.stringify({ ajv: version, compiled: [...validators.keys()], failed, warnings, results }));
