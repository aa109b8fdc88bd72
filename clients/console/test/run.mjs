// Bundles the unit tests (test/*.test.ts) for Node with esbuild, then runs them with node --test.
import { spawnSync } from "node:child_process";
import { readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { ownPackages } from "../own-packages.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "dist-test");
rmSync(out, { recursive: true, force: true });
const tests = readdirSync(join(root, "test")).filter((name) => name.endsWith(".test.ts"));
await esbuild.build({
  absWorkingDir: root,
  entryPoints: tests.map((name) => `test/${name}`),
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  outdir: out,
  outExtension: { ".js": ".mjs" },
  plugins: [ownPackages],
  logLevel: "warning",
});
const run = spawnSync(process.execPath, ["--test", ...tests.map((name) => join(out, name.replace(/\.ts$/, ".mjs")))], { stdio: "inherit" });
process.exit(run.status ?? 1);
