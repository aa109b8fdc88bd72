// Bundles the console into gateway/console/dist (shipped inside the Python package).
//   node build.mjs          build and write the bundle
//   node build.mjs --check  build in memory and fail when the committed bundle differs
// The output is deterministic: fixed file names, no source maps, no timestamps; index.html
// names each asset with a hash of its bytes so a browser never mixes two versions.
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { ownPackages } from "./own-packages.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, "..", "..", "gateway", "console", "dist");
const check = process.argv.includes("--check");

async function bundle() {
  const result = await esbuild.build({
    absWorkingDir: here,
    entryPoints: { app: "src/main.ts", style: "src/style.css" },
    bundle: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    minify: true,
    legalComments: "none",
    charset: "utf8",
    outdir: "out",
    write: false,
    plugins: [ownPackages],
    logLevel: "warning",
  });
  const files = new Map();
  for (const file of result.outputFiles) {
    files.set(relative(join(here, "out"), file.path), Buffer.from(file.contents));
  }
  const digest = (name) => createHash("sha256").update(files.get(name)).digest("hex").slice(0, 12);
  const html = readFileSync(join(here, "index.html"), "utf8")
    .replace("app.js", `app.js?v=${digest("app.js")}`)
    .replace("style.css", `style.css?v=${digest("style.css")}`);
  files.set("index.html", Buffer.from(html));
  return files;
}

function committed() {
  const files = new Map();
  let names = [];
  try {
    names = readdirSync(outDir);
  } catch {
    return files;
  }
  for (const name of names) files.set(name, readFileSync(join(outDir, name)));
  return files;
}

const fresh = await bundle();
if (check) {
  const old = committed();
  const names = new Set([...fresh.keys(), ...old.keys()]);
  const stale = [...names].filter((n) => !old.has(n) || !fresh.has(n) || !old.get(n).equals(fresh.get(n)));
  if (stale.length) {
    console.error(`gateway/console/dist differs from a fresh build (${stale.sort().join(", ")}):`);
    console.error("run `npm --prefix clients/console run build` and commit the result");
    process.exit(1);
  }
  console.log("gateway/console/dist matches the sources");
} else {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  for (const [name, bytes] of fresh) writeFileSync(join(outDir, name), bytes);
  console.log(`wrote ${[...fresh.keys()].sort().join(", ")} to ${relative(process.cwd(), outDir) || "."}`);
}
