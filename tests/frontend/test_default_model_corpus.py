"""The default model's training text (tools/default_model_corpus.py): manual pages to plain text,
chat pairs in the layout `serve` renders, and a held-out split that keeps held-out modules'
manual pages out of training."""

import importlib.util
import random
import sys
from pathlib import Path

import pytest

from iree_glm.server.chat_format import glm4_chat_prompt


@pytest.fixture(scope="module")
def corpus():
    path = Path(__file__).resolve().parents[2] / "tools" / "default_model_corpus.py"
    spec = importlib.util.spec_from_file_location("default_model_corpus", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


PAGE = """<html><body><div class="sphinxsidebar">Navigation text</div>
<div class="body" role="main"><section><h1>json \u2014 JSON encoder<a class="headerlink" href="#x">\u00b6</a></h1>
<p>Serialize <code>obj</code>   to a
JSON formatted <em>str</em>.</p>
<div class="highlight"><pre>&gt;&gt;&gt; import json
&gt;&gt;&gt; json.dumps([1, 2])
</pre></div>
<dl><dt>json.loads(s)</dt><dd><p>Deserialize \u201cs\u201d.</p></dd></dl></section></div>
<div class="footer">Copyright</div></body></html>"""


def test_manual_page_becomes_paragraphs_of_its_main_body_only(corpus):
    parser = corpus._ManualText()
    parser.feed(PAGE)
    parser._flush()
    assert parser.paras == ["json \u2014 JSON encoder", "Serialize obj to a JSON formatted str.",
                            ">>> import json\n>>> json.dumps([1, 2])", "json.loads(s)", "Deserialize \u201cs\u201d."]


def test_chat_pairs_use_the_prompt_layout_serve_renders(corpus):
    doc = corpus.Docstring("json.dumps", "function", "(obj, *, indent=None)", "Serialize obj.\n\nMore text.")
    for seed in range(8):  # every question form
        (pair,) = corpus.chat_pairs([doc], random.Random(seed))
        question, answer = pair.removeprefix(f"{corpus.USER}\n").split(corpus.ASSISTANT)
        assert pair.startswith(glm4_chat_prompt([{"role": "user", "content": question}]))
        assert answer in ("\nSerialize obj.", '\ndef dumps(obj, *, indent=None):\n    """Serialize obj."""')


def test_held_out_modules_keep_their_manual_pages_out_of_training(corpus, tmp_path):
    lib, html = tmp_path / "lib", tmp_path / "html"
    names = [f"mod{i}" for i in range(60)]
    for name in names:
        (lib / f"{name}.py").parent.mkdir(parents=True, exist_ok=True)
        (lib / f"{name}.py").write_text(f'"""The {name} module does many useful things."""\n')
        (html / "library").mkdir(parents=True, exist_ok=True)
        (html / "library" / f"{name}.html").write_text(
            f'<div role="main"><p>{name}: {"a manual page of some length " * 10}</p></div>')
    built = corpus.build(lib, html, seed=0)
    held = {n for n in names if corpus.held_out(f"{n}.py")}
    assert held and len(held) < len(names)
    for n in names:
        texts = [t for t in built.train + built.heldout if t.startswith(n + ":")]
        page_held = n in held or corpus.held_out(f"library/{n}.html")  # a page is also held out by its own name
        assert texts and all((t in built.heldout) == page_held for t in texts)
        assert any(n in q for q in (built.chat_heldout if n in held else built.chat_train))
