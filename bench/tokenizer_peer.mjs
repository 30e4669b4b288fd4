// The JavaScript peer of paft-tokenizer-bench: @lenml/tokenizers (transformers.js's tokenizers)
// on the same corpus, same passes, same output line.
//   node bench/tokenizer_peer.mjs LIB_MAIN_MJS TOKENIZER_DIR CORPUS [REPEATS]
import { readFileSync } from "node:fs";
import { join } from "node:path";

const [lib, dir, corpus, repeatsArg] = process.argv.slice(2);
const repeats = Number(repeatsArg ?? 3);
const { TokenizerLoader } = await import(lib);
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")),
  tokenizerConfig: JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")),
});
const lines = readFileSync(corpus, "utf8").split("\n");
if (lines.at(-1) === "") lines.pop();
const bytes = lines.reduce((n, l) => n + Buffer.byteLength(l), 0);
const pass = () => lines.reduce((n, l) => n + tokenizer.encode(l, { add_special_tokens: false }).length, 0);
const start = process.hrtime.bigint();
let tokens = 0;
for (let r = 0; r < repeats; ++r) tokens += pass();
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(JSON.stringify({ impl: "js-peer", tokenizer: dir, bytes: bytes * repeats, tokens, seconds, tokens_per_s: tokens / seconds }));
