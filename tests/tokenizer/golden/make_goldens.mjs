// Makes the tokenizer goldens: corpus.json encoded (and decoded back) by @lenml/tokenizers, a
// JavaScript port of transformers.js's tokenizers, with the real tokenizer files of each model.
//   node make_goldens.mjs CACHE      (CACHE as fetch_tokenizers.sh fills it)
// Writes <name>.golden.json beside this script: [{"text", "ids", "decoded"}...].
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const cache = process.argv[2];
if (!cache) throw new Error("usage: node make_goldens.mjs CACHE");
const here = dirname(fileURLToPath(import.meta.url));
const { TokenizerLoader } = await import(join(cache, "lib", "main.mjs"));
const corpus = JSON.parse(readFileSync(join(here, "corpus.json"), "utf8"));

for (const name of ["llama3", "qwen3", "gemma3", "llama2"]) {
  const tokenizer = TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(readFileSync(join(cache, name, "tokenizer.json"), "utf8")),
    tokenizerConfig: JSON.parse(readFileSync(join(cache, name, "tokenizer_config.json"), "utf8")),
  });
  const goldens = corpus.map((text) => {
    const ids = tokenizer.encode(text, { add_special_tokens: false });
    const decoded = ids.length === 0 ? "" : tokenizer.decode(ids, {
      skip_special_tokens: false,
      clean_up_tokenization_spaces: false,
    });
    return { text, ids, decoded };
  });
  writeFileSync(join(here, `${name}.golden.json`), JSON.stringify(goldens, null, 0) + "\n");
  console.log(`${name}: ${goldens.length} texts, ${goldens.reduce((n, g) => n + g.ids.length, 0)} ids`);
}
