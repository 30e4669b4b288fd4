# Writes chat_cases.json: conversations and hand-written templates that exercise what chat
# templates use (run once; the file is committed and edited by hand after).
import json
conversations = [
    {"messages": [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi, how can I help?"}]},
    {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}]},
    {"messages": [{"role": "user", "content": "  leading and trailing spaces \n\n"},
                  {"role": "assistant", "content": "\n\tTabbed\r\nCRLF  "}]},
    {"messages": [{"role": "user", "content": "Unicode: 中文 العربية 👨‍👩‍👧 e\u0301 <|im_start|> <s> {{ not a tag }} {% raw %}"},
                  {"role": "assistant", "content": "Quotes ' \" \\ and braces {} [] done."}]},
    {"messages": [{"role": "user", "content": "one"}, {"role": "user", "content": "two in a row"}]},
    {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "skip me"},
                  {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
                  {"role": "assistant", "content": "a2"}, {"role": "user", "content": "u3"},
                  {"role": "assistant", "content": "a3"}]},
    {"messages": [{"role": "user", "content": "What is the weather in Paris?"},
                  {"role": "assistant", "content": "<think>\nI should call the tool.\n</think>\n\nLet me check.",
                   "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
                  {"role": "tool", "content": "{\"temperature\": 21}"},
                  {"role": "tool", "content": "second tool output"},
                  {"role": "assistant", "content": "It is 21 °C."}],
     "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]},
    {"messages": [{"role": "user", "content": "Think less."}], "enable_thinking": False},
    {"messages": []},
]
templates = {
    "whitespace": (
        "{% for m in messages %}\n"
        "  {{ m.role }}: {{ m.content }}\n"
        "{% endfor %}\n"
        "    {%- if add_generation_prompt %}\n"
        "assistant:\n"
        "{% endif %}\n"
        "  {# a comment #}\n"
        "end {%+ if true %}kept{% endif %}  {{- ' tight ' -}}  done\n"
    ),
    "loops_and_filters": (
        "{%- for m in messages -%}\n"
        "[{{ loop.index }}/{{ loop.length }}{% if loop.first %} first{% endif %}{% if loop.last %} last{% endif %}"
        "{% if not loop.first %} prev={{ loop.previtem.role }}{% endif %}] "
        "{{ m.role|upper }}={{ m.content|trim|length }} {{ m['content'][:5] }}|{{ m.content[::-1][:3] }}|{{ loop.cycle('a', 'b') }}\n"
        "{% endfor -%}\n"
        "{{ messages|map(attribute='role')|join(',') }} {{ messages|selectattr('role', 'equalto', 'user')|list|length }} "
        "{{ messages|rejectattr('role', 'equalto', 'user')|map(attribute='role')|unique|list }}\n"
        "{% if messages %}{{ messages[-1].content.split()|tojson }} {{ messages[0].content.split('e', 1) }}{% endif %}\n"
        "{{ {'a': [1, 2.5, none, true], 'b': 'x\"y', 'c': {}}|tojson(indent=2) }}\n"
        "{{ {'z': 1, 'a': [], 'u': 'ü'}|tojson }} {{ range(3)|list }} {{ range(5, 0, -2)|list }}\n"
        "{% for k, v in {'x': 1, 'y': 'two'}.items() %}{{ k }}={{ v }};{% endfor %} "
        "{% for c in 'héllo' %}{{ c }}.{% endfor %} {% for x in [] %}never{% else %}empty{% endfor %}\n"
        "{{ none }} {{ true }} {{ [1, 'a', none] }} {{ 1.0 }} {{ 0.1 + 0.2 }} {{ 3 * 'ab' }} {{ 1e20 }} {{ 2.5e-7 }}\n"
        "{{ 'Hello World'.lower() }} {{ 'hello world'.title() }} {{ 'x'.capitalize() }} {{ ' pad '.strip() }}|"
        "{{ 'xxhixx'.strip('x') }}|{{ 'a-b-c'.replace('-', '+', 1) }} {{ 'abc'.startswith(('x', 'a')) }} {{ 'abc'.endswith('bc') }}\n"
        "{{ 'some text'|default('d') }} {{ missing|default('dflt') }} {{ ''|default('empty', true) }} {{ [3, 1, 2]|first }} {{ [3, 1, 2]|last }} {{ 'abc'|reverse }}\n"
        "{{ 'line1\\nline2'|indent(2) }} {{ -3|abs }} {{ '42'|int + 1 }} {{ '2.5'|float }} {{ messages|length }}\n"
    ),
    "statements": (
        "{%- set ns = namespace(count=0, last='') -%}\n"
        "{%- macro fmt(role, text='?') -%}<{{ role }}:{{ text|default('none', true) }}>{%- endmacro -%}\n"
        "{%- for m in messages if m.role != 'system' -%}\n"
        "  {%- if loop.index > 4 %}{% break %}{% endif -%}\n"
        "  {%- if m.content is string and m.content.startswith('skip') %}{% continue %}{% endif -%}\n"
        "  {%- set ns.count = ns.count + 1 -%}\n"
        "  {%- set ns.last = m.role -%}\n"
        "  {%- set local = 'leaks?' -%}\n"
        "  {{ fmt(m.role, m.content) }}{% generation %}[gen {{ loop.index0 }}]{% endgeneration %}\n"
        "{%- endfor -%}\n"
        "{% set summary %}n={{ ns.count }} last={{ ns.last }}{% endset %}\n"
        "{{ summary }} local={{ local is defined }} {{ 'odd' if ns.count is odd else 'even' }} {{ 7 // 2 }} {{ 7 / 2 }} {{ -7 % 3 }} {{ -7 // 2 }} {{ 2 ** 10 }} {{ 'ab' ~ 3 ~ none }}\n"
        "{{ messages|length > 2 and 'long' or 'short' }} {{ 'x' in 'xyz' }} {{ 'q' not in ['a', 'b'] }} {{ 'role' in messages[0] if messages else 'n/a' }}\n"
        "{%- if messages and messages[0].missing is not defined %} no-missing{% endif %}\n"
        "{%- if messages and messages[0].content is not none %} has-content{% endif %}\n"
        "{% set a, b = 1, 'two' %}{{ a }}{{ b }} {{ (1, 2)[1] }} {{ [10, 20, 30][1:] }} {{ 10 is divisibleby 5 }} {{ 'ABC' is upper }}\n"
        "{{ fmt('r') }} {{ fmt(text='t', role='r2') }} {% if bos_token %}{{ bos_token }}{% endif %}{{ eos_token }}\n"
        "{{ raise_exception('Conversations longer than 6 messages are not allowed') if messages|length > 6 else 'ok' }}\n"
    ),
    "edge_semantics": (
        "{{ 'a b  '.split(none, 1) }} {{ 'x' in missing_value }} {{ 0 is sameas false }} {{ none is sameas none }}"
        " {{ ['A', 'a', 'b']|unique|list }} {{ '\\u2581x\\x41\\101' }} {{ 'a' is in ['a', 'b'] }}"
        " {{ true is number }} {{ '12' is lower }} {{ 'ab' is lower }} {{ true|int }} {{ {'d': '\x7f'}|tojson }}"
        " {{ messages|length is divisibleby 2 }} {{ (messages|selectattr('role', 'in', ['user'])|list|length) }}\n"
    ),
}
json.dump({"conversations": conversations, "templates": templates}, open("chat_cases.json", "w"),
          ensure_ascii=False, indent=1)
