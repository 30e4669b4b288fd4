# Makes chat.golden.json: every conversation of chat_cases.json rendered (with and without the
# generation prompt) by Jinja2 itself (Debian's python3-jinja2) set up as transformers'
# apply_chat_template sets it up (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
# loopcontrols, {% generation %}, raise_exception, strftime_now, its tojson), with the hand-written
# templates of chat_cases.json and the real chat templates of the tokenizers in CACHE.
#   /usr/bin/python3 make_chat_goldens.py CACHE
import json, os, sys
from datetime import datetime
import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

class Generation(Extension):  # transformers' AssistantTracker, without the tracking
    tags = {"generation"}
    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)
    def _generation_support(self, caller):
        return caller()

def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)

here = os.path.dirname(os.path.abspath(__file__))
cases = json.load(open(os.path.join(here, "chat_cases.json")))
sources = {name: (src, {"bos_token": "<s>", "eos_token": "</s>"}) for name, src in cases["templates"].items()}
cache = sys.argv[1]
for name in ["llama3", "qwen3", "gemma3"]:
    config = json.load(open(os.path.join(cache, name, "tokenizer_config.json")))
    special = {k: (v["content"] if isinstance(v, dict) else v) for k, v in config.items()
               if k in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token") and v is not None}
    sources[name] = (config["chat_template"], special)

goldens = []
for name, (source, special) in sources.items():
    template = env.from_string(source)
    for index, conversation in enumerate(cases["conversations"]):
        for add_generation_prompt in (False, True):
            context = dict(special, messages=conversation["messages"], add_generation_prompt=add_generation_prompt,
                           tools=None, documents=None)
            context.update({k: v for k, v in conversation.items() if k != "messages"})
            entry = {"template": name, "conversation": index, "add_generation_prompt": add_generation_prompt}
            try:
                entry["text"] = template.render(**context)
            except Exception as e:  # the C++ side must fail too (raise_exception: same message)
                entry["error"] = f"{type(e).__name__}: {e}"
            goldens.append(entry)
json.dump(goldens, open(os.path.join(here, "chat.golden.json"), "w"), ensure_ascii=False, indent=0)
print(len(goldens), "renders,", sum("error" in g for g in goldens), "errors, jinja2", jinja2.__version__)
