// esbuild plugin: the generated code lives in clients/typescript/src/gen and imports these
// packages; take them from this package's node_modules, so a bundle holds one copy of each
// whatever else is installed (and clients/typescript's own node_modules is never needed).
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

export const ownPackages = {
  name: "own-packages",
  setup(build) {
    build.onResolve({ filter: /^@(bufbuild|connectrpc)\// }, (args) => {
      if (args.pluginData === "own") return undefined;
      return build.resolve(args.path, { kind: args.kind, resolveDir: here, pluginData: "own" });
    });
  },
};
