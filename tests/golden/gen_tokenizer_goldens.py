#!/usr/bin/env python3
"""Golden token ids for engine/tokenizer, from Hugging Face `tokenizers` (the reference).

Rerun (from the repository root; needs the venv with tokenizers 0.22 and transformers 4.57):

    TOKENIZERS_PARALLELISM=false /work/goldenvenv/bin/python tests/golden/gen_tokenizer_goldens.py

  --retrain   train the GPT-2-style fixture tokenizer again instead of reusing the committed one
              (training is deterministic in practice, but the committed file is the reference)

Writes tests/golden/fixtures/tokenizer/:
  corpus.jsonl           the test strings, one JSON string per line (hand-written + generated
                         deterministically from a seed)
  gpt2_style.json        a small byte-level BPE tokenizer trained here on part of the corpus
  variant_prefix.json    gpt2_style with ByteLevel add_prefix_space, a TemplateProcessing BOS and
                         added tokens using lstrip/rstrip/single_word/normalized
  variant_splits.json    gpt2_style with Split behaviours (every kind, String and Regex patterns,
                         invert), Digits and BPE ignore_merges
  goldens_<name>.json    for each tokenizer: "encode" (ids per corpus line, no special tokens
                         added), "encode_no_parse_special" (HF encode_special_tokens=True, a subset),
                         "invalid_utf8" (byte strings as hex, encoded as HF encodes the
                         errors="replace" decoding), "decode" (id lists, skip_special_tokens
                         false/true), "sweep" (FNV-1a digests of pre-tokenization and ids over all
                         code points of planes 0-3 and 14, in chunks), and for DeepSeek
                         "with_bos" (transformers AutoTokenizer, add_special_tokens=True)

and engine/tokenizer/unicode_categories.inc: the code point ranges of every Unicode general
category as Hugging Face's regex engine (Oniguruma) has them (its Unicode version is newer than
PCRE2's, so engine/tokenizer/regex.cc spells \p{..} classes out from this table).

The DeepSeek-V3 tokenizer is read from ../shared/models/deepseek-v3-tokenizer (beside the repo).
"""

import argparse
import json
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from tokenizers import processors, trainers  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests/golden/fixtures/tokenizer"
DEEPSEEK_DIR = REPO.parent / "shared/models/deepseek-v3-tokenizer"
SEED = 20261128
SWEEP_CHUNK = 4096
SWEEP_RANGES = [(0, 0x40000), (0xE0000, 0xE1000)]


# ---- corpus ---------------------------------------------------------------------------------

HAND = [
    "", " ", "  ", "\t", "\n", "\r\n", "\n\n\n", " \n", "\n ", "a", "Hello", " Hello", "Hello ",
    "Hello world", "Hello  world", "Hello\tworld", "Hello\nworld", "Hello\r\nworld\r\n",
    "It's, isn't it? They're 'quoted' and we'll see; I'd've.", "IT'S SHOUTING'RE",
    "<｜User｜>hi<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>2+2?<｜Assistant｜>",
    "<｜User｜><｜User｜><｜User｜>", "<｜User｜ >", "<|User|>", "<｜User|>", "<｜end▁of▁sentence",
    "<｜end▁of▁sentence｜", "<｜▁pad▁｜>", "<｜place▁holder▁no▁17｜>", "<｜place▁holder▁no▁9999｜>",
    "<|EOT|>", "<|EOT|><|EOT|>", "x<|EOT|>y", "<|endoftext|>", "a<|endoftext|>b", "<|endoftext|",
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
    "{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
    "<think>\nLet me think.\n</think>\n\nAnswer: 42", "<｜fim▁begin｜>def f(<｜fim▁hole｜>)<｜fim▁end｜>",
    "<mask>", " <mask> ", "a <mask>b", "[W]", "x[W]y", " [W] ", "ab", "cabd", "<s>", "</s>",
    "1", "12", "123", "1234", "12345", "123456", "1234567", "3.14159", "1,000,000", "v1.2.3",
    "2026-11-28T13:24:29Z", "0x7fffffff", "١٢٣٤", "１２３", "²³", "Ⅻ", "½",
    "中文", "你好，世界！", "日本語のテキストです。", "カタカナとひらがな", "한국어 텍스트입니다.",
    "مرحبا بالعالم", "שלום עולם", "Привет, мир!", "Γειά σου Κόσμε", "Grüße aus Köln, Straße",
    "naïve café résumé", "e\u0301", "A\u030a", "\u0915\u094d\u0937", "ไทย", "ᄀᄀᄀ각",
    "👍", "👨‍👩‍👧‍👦", "🏳️‍🌈", "👩🏽‍💻", "🇩🇪🇯🇵", "a👍b", " 👍 ", "❤️", "☃", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𠀋𠀋",
    "\u00a0", "a\u00a0b", "\u2003", "a\u3000b", "\u2028", "\u2029", "\u0085", "a\u0085b",
    "\u180e", "a\u180eb", " \u180e ", "\u200b", "a\u200bb", "\ufeff", "\ufeffBOM", "\u200d",
    "\x00", "a\x00b", "\x01\x02\x1f\x7f", "\x1c\x1d\x1e\x1f", " \x1c ", "\u00ad", "\ufffd",
    "\ufffd\ufffd", "\U0010ffff", "\U000e0001", "\uf8ff", "\u2060", "\t\t\t", " \t \t ",
    "   leading", "trailing   ", "  both  ", "a  \n  b", "a \n\n b", "a\r\rb", "\r", "\r\r\n\n",
    "x \r\n", "end.\n", "\n\n\nx", "    indented code", "\ttabbed", "foo  \t\n  bar",
    "!!!", "...", "?!", "a...b", "«quote»", "“smart quotes”", "‘single’", "—dash—", "a—b",
    "$100", "€50", "£", "¥", "100%", "#hashtag", "@mention", "user@example.com",
    "https://example.com/path?query=1&b=2#frag", "C:\\Windows\\System32", "/usr/bin/env python3",
    "snake_case_name", "camelCaseName", "PascalCase", "SCREAMING_CASE", "kebab-case-name",
    "a.b.c", "a::b::c", "a->b", "x+=1", "i++", "!=", "===", "<=>", "&&", "||", "//", "/* */",
]

CODE = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "import numpy as np\n\narr = np.zeros((3, 4), dtype=np.float32)\nprint(arr.shape)\n",
    "class Foo:\n    def __init__(self, x: int) -> None:\n        self._x = x  # private\n",
    "#include <vector>\n\nint main() {\n  std::vector<int> v{1, 2, 3};\n  return v.size();\n}\n",
    "template <typename T>\nT max(T a, T b) { return a > b ? a : b; }\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "func main() {\n\tfmt.Println(\"hello, 世界\")\n}\n",
    "const add = (a, b) => a + b;\nconsole.log(`sum: ${add(1, 2)}`);\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
    "<div class=\"container\">\n  <p>Hello &amp; welcome</p>\n</div>",
    "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\"}}",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\"; done\n",
    "public static void main(String[] args) {\n    System.out.println(\"Hi\");\n}",
    "    return x;\r\n}\r\n", "if (a&&b||!c) { x = y<<2 >> 1; }", "a = [x**2 for x in range(10) if x % 2]",
]

EN_WORDS = ("the of and to in is was for on that with as by it at from be this are or an have not "
            "which but had they you were his her their one all there can been has more if will "
            "would when who what so up out about into than them only other new some could time "
            "these two may first then do any like my now over such our man me even most made "
            "after also did many before must through back years where much your way well down "
            "should because each just those people how too little state good very make world "
            "still own see men work long get here between both life being under never day same "
            "another know while last might us great old year off come since against go came right "
            "used take three tokenizer model inference server attention latent expert cache "
            "throughput latency benchmark quantization gradient transformer").split()
DE = ["Die Straße ist nass.", "Ich möchte ein Brötchen.", "Über den Wolken muss die Freiheit wohl "
      "grenzenlos sein.", "Das Bundesverfassungsgericht entschied gestern.", "Grüß Gott!"]
ZH = ["我们今天去公园散步。", "人工智能正在改变世界", "这是一个测试句子，包含标点符号！", "深度求索发布了新模型",
      "请把文件发给我，谢谢。"]
JA = ["東京は日本の首都です。", "今日はいい天気ですね。", "コンピューターを使っています", "ありがとうございました！",
      "漢字とカタカナとひらがな"]
KO = ["안녕하세요, 반갑습니다.", "오늘 날씨가 좋네요.", "인공지능 모델을 학습합니다", "서울특별시 강남구"]
AR = ["مرحبا، كيف حالك؟", "الذكاء الاصطناعي يغير العالم.", "هذا اختبار للنص العربي"]
OTHER = ["Привет, как дела?", "Ελληνικά κείμενα εδώ.", "हिन्दी में लिखा गया पाठ", "Türkçe metin örneği",
         "Tiếng Việt có dấu", "Español: ¿Qué tal? ¡Muy bien!", "Français : « très bien » !",
         "Polski: zażółć gęślą jaźń", "עברית כתובה כאן", "ภาษาไทยไม่มีช่องว่าง"]
EMOJI = ["😀", "🎉", "👍🏻", "👨‍💻", "👩‍❤️‍👨", "🏴‍☠️", "🇺🇸", "✨", "🔥", "💯", "🧑🏾‍🚀", "☺️", "#️⃣"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2009", "\u200b", " \n", "\n\n",
          "\t\n", "   ", "\r"]
SPECIALS = ["<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>",
            "<|EOT|>", "<｜tool▁sep｜>", "<|endoftext|>", "<mask>", "[W]", "<｜place▁holder▁no▁798｜>"]
NEAR_MISS = ["<｜User|>", "<|User｜>", "<｜User｜", "｜User｜>", "<｜user｜>", "<｜ User｜>",
             "<｜end▁of▁sentence|>", "<｜end of sentence｜>", "<|EOT|", "<|eot|>", "<|endoftext>",
             "< mask>", "<mask", "[w]"]
RANDOM_RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
                 (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F),
                 (0x2190, 0x23FF), (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
                 (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0x300, 0x36F)]


def sentence(rng, words=None):
    words = words or EN_WORDS
    n = rng.randint(3, 18)
    text = " ".join(rng.choice(words) for _ in range(n))
    text = text[0].upper() + text[1:]
    return text + rng.choice([".", "!", "?", ",", ";", ":", "", "..."])


def random_unicode(rng, n):
    out = []
    for _ in range(n):
        lo, hi = rng.choice(RANDOM_RANGES)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def generated(rng):
    kinds = [
        lambda: sentence(rng),
        lambda: " ".join(sentence(rng) for _ in range(rng.randint(2, 5))),
        lambda: rng.choice(DE) + " " + sentence(rng),
        lambda: "".join(rng.choice(ZH) for _ in range(rng.randint(1, 3))),
        lambda: rng.choice(JA) + rng.choice(["", " ", "\n"]) + rng.choice(JA),
        lambda: rng.choice(KO) + " " + rng.choice(KO),
        lambda: rng.choice(AR) + " " + str(rng.randint(0, 9999)),
        lambda: rng.choice(OTHER),
        lambda: rng.choice(CODE),
        lambda: rng.choice(CODE).replace("    ", "\t"),
        lambda: "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40))),
        lambda: " ".join(str(rng.randint(0, 10 ** rng.randint(1, 12))) for _ in range(4)),
        lambda: "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 8))),
        lambda: rng.choice(EN_WORDS) + "".join(rng.choice(SPACES) for _ in range(3)) + "x",
        lambda: "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 5))),
        lambda: sentence(rng) + " " + rng.choice(EMOJI),
        lambda: rng.choice(SPECIALS) + sentence(rng) + rng.choice(SPECIALS),
        lambda: sentence(rng) + rng.choice(NEAR_MISS) + sentence(rng),
        lambda: rng.choice(SPACES) + rng.choice(SPECIALS) + rng.choice(SPACES) + "x",
        lambda: "".join(rng.choice(SPECIALS + NEAR_MISS) for _ in range(3)),
        lambda: random_unicode(rng, rng.randint(1, 30)),
        lambda: rng.choice(ZH) + sentence(rng) + rng.choice(KO),
        lambda: "".join(rng.choice(EN_WORDS).upper() for _ in range(3)),
        lambda: "'" + rng.choice(["s", "t", "re", "ve", "m", "ll", "d", "S", "LL"]) + " " +
        rng.choice(EN_WORDS),
        lambda: rng.choice(EN_WORDS) * rng.randint(2, 12),
        lambda: "".join(rng.choice("!@#$%^&*()[]{}<>?/\\|-_=+~`'\";:,.") for _ in range(12)),
    ]
    return rng.choice(kinds)()


def build_corpus():
    rng = random.Random(SEED)
    corpus = list(HAND) + list(CODE) + DE + ZH + JA + KO + AR + OTHER + EMOJI
    while len(corpus) < 2400:
        corpus.append(generated(rng))
    long_text = "\n\n".join(sentence(rng) for _ in range(300))
    corpus.append(long_text)  # one long document (word cache, heap merge of long words)
    corpus.append("a" * 3000 + " " + "ab" * 700 + " " + "9" * 500)
    return corpus


INVALID_UTF8 = [
    b"\xff", b"\xfe\xff", b"abc\x80def", b"\xc3", b"\xc3(", b"\xe4\xb8", b"\xe4\xb8A", b"\xf0\x9f\x98",
    b"\xf0\x9f\x98 ok", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe0\x80\xaf",
    b"\xf0\x80\x80", b"\x80\x80\x80", b"Hello \xe2\x82 world", b"<\xef\xbd\x9cUser\xef\xbd\x9c>\xff",
    b"\xef\xbd", b"\xf8\x88\x80\x80\x80", b"a\xc2", b"\xe2\x28\xa1", b"\xfc\x80\x80\x80\x80\xaf",
]


# ---- tokenizers -------------------------------------------------------------------------------

def train_gpt2_style(corpus):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=2000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|pad|>"])
    tok.train_from_iterator(corpus[: len(corpus) // 2], trainer=trainer)
    return tok


def make_variant_prefix(base_json):
    tok = Tokenizer.from_str(base_json)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False)])
    tok.add_tokens([AddedToken("[W]", single_word=True), AddedToken("ab", normalized=True)])
    bos = "<|endoftext|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def make_variant_splits(base_json):
    spec = json.loads(base_json)
    spec["model"]["ignore_merges"] = True
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": "--"}, "behavior": "MergedWithPrevious",
         "invert": False},
        {"type": "Split", "pattern": {"Regex": "[.,;]"}, "behavior": "MergedWithNext",
         "invert": False},
        {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Removed", "invert": False},
        {"type": "Split", "pattern": {"Regex": "[aeiouAEIOU]+"}, "behavior": "Contiguous",
         "invert": True},
        {"type": "Split", "pattern": {"Regex": "x*"}, "behavior": "Isolated", "invert": False},
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ]}
    return Tokenizer.from_str(json.dumps(spec))


# ---- Unicode general categories as Oniguruma sees them --------------------------------------

CATEGORIES = ("Lu Ll Lt Lm Lo Mn Mc Me Nd Nl No Pc Pd Ps Pe Pi Pf Po Sm Sc Sk So Zs Zl Zp Cc Cf "
              "Cs Co Cn").split()


def category_ranges():
    cps = [c for c in range(0x110000) if not (0xD800 <= c <= 0xDFFF)]
    text = "".join(map(chr, cps))
    ranges = {"Cs": [(0xD800, 0xDFFF)]}
    covered = 0
    for cat in CATEGORIES:
        if cat == "Cs":
            continue
        split = pre_tokenizers.Split(Regex(f"\\p{{{cat}}}"), behavior="removed")
        kept = bytearray(len(cps))
        for _, (start, end) in split.pre_tokenize_str(text):
            kept[start:end] = b"\x01" * (end - start)
        out = []
        for i, cp in enumerate(cps):
            if kept[i]:
                continue
            covered += 1
            if out and out[-1][1] == cp - 1:
                out[-1] = (out[-1][0], cp)
            else:
                out.append((cp, cp))
        ranges[cat] = out
    assert covered == len(cps), "categories must partition the code points"
    return ranges


def write_category_table(path):
    import tokenizers
    lines = [f"// Generated by tests/golden/gen_tokenizer_goldens.py from Hugging Face tokenizers "
             f"{tokenizers.__version__}",
             "// (Oniguruma): the code point ranges of each Unicode general category. Do not edit.",
             "// clang-format off"]
    for cat, ranges in category_ranges().items():
        items = ", ".join(f"{{0x{lo:X}, 0x{hi:X}}}" for lo, hi in ranges)
        lines.append(f'{{"{cat}", {{{items}}}}},')
    lines.append("// clang-format on")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---- goldens ----------------------------------------------------------------------------------

def fnv1a(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def sweep_text(lo, hi):
    # Each code point in contexts that reveal its regex classes; the C++ test builds the same.
    parts = []
    for cp in range(lo, hi):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        parts.append(f"{c}a{c} {c}1{c}\n{c}x ")
    return "".join(parts)


def piece_ends(tok, text):
    ends = []
    for _, (_, end) in tok.pre_tokenizer.pre_tokenize_str(text):
        ends.append(end)
    # offsets are in characters: convert to bytes
    char_to_byte = {}
    pos = 0
    for i, ch in enumerate(text):
        char_to_byte[i] = pos
        pos += len(ch.encode("utf-8"))
    char_to_byte[len(text)] = pos
    return [char_to_byte[e] for e in ends]


def sweep(tok, add_prefix_space):
    rows = []
    for lo, hi in SWEEP_RANGES:
        for start in range(lo, hi, SWEEP_CHUNK):
            end = min(start + SWEEP_CHUNK, hi)
            text = sweep_text(start, end)
            ends = piece_ends(tok, text) if not add_prefix_space else []
            ids = tok.encode(text, add_special_tokens=False).ids
            rows.append([start, end, fnv1a(",".join(map(str, ends)).encode()),
                         fnv1a(",".join(map(str, ids)).encode()), len(ids)])
    return rows


def decode_cases(tok, rng):
    vocab = tok.get_vocab_size()
    special = [tok.token_to_id(t) for t in SPECIALS if tok.token_to_id(t) is not None]
    cases = []
    for _ in range(60):
        ids = [rng.randrange(vocab) for _ in range(rng.randint(1, 12))]
        for _ in range(rng.randint(0, 3)):
            if special:
                ids.insert(rng.randrange(len(ids) + 1), rng.choice(special))
        cases.append(ids)
    cases.append([])
    out = []
    for ids in cases:
        out.append({"ids": ids, "text": tok.decode(ids, skip_special_tokens=False),
                    "text_skip_special": tok.decode(ids, skip_special_tokens=True)})
    return out


def goldens(tok, corpus, corpus_step, with_sweep, add_prefix_space=False):
    corpus = corpus[::corpus_step]
    encode = [tok.encode(s, add_special_tokens=False).ids for s in corpus]
    encode_with_special = {}
    for i in range(0, len(corpus), 7):
        encode_with_special[str(i)] = tok.encode(corpus[i], add_special_tokens=True).ids
    tok.encode_special_tokens = True
    no_parse = {str(i): tok.encode(corpus[i], add_special_tokens=False).ids
                for i in range(len(corpus))
                if any(sp in corpus[i] for sp in SPECIALS)}
    tok.encode_special_tokens = False
    invalid = [{"hex": b.hex(), "ids": tok.encode(b.decode("utf-8", errors="replace"),
                                                  add_special_tokens=False).ids,
                "replaced": b.decode("utf-8", errors="replace")} for b in INVALID_UTF8]
    out = {"encode": encode, "encode_with_special": encode_with_special,
           "encode_no_parse_special": no_parse, "invalid_utf8": invalid,
           "decode": decode_cases(tok, random.Random(SEED + 1)),
           "vocab_size": tok.get_vocab_size(), "corpus_step": corpus_step}
    if with_sweep:
        out["sweep"] = sweep(tok, add_prefix_space)
    return out


def with_bos_cases(corpus):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(DEEPSEEK_DIR))
    return [{"text": s, "ids": tok.encode(s, add_special_tokens=True)} for s in corpus[:40:3]]


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    write_category_table(REPO / "engine/tokenizer/unicode_categories.inc")
    corpus = build_corpus()
    with open(OUT / "corpus.jsonl", "w", encoding="utf-8") as f:
        for s in corpus:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")

    base_path = OUT / "gpt2_style.json"
    if args.retrain or not base_path.exists():
        base_path.write_text(train_gpt2_style(corpus).to_str(pretty=False) + "\n", encoding="utf-8")
    base = Tokenizer.from_file(str(base_path))
    base_json = base_path.read_text(encoding="utf-8")
    variants = {"variant_prefix": make_variant_prefix(base_json),
                "variant_splits": make_variant_splits(base_json)}
    for name, tok in variants.items():
        (OUT / f"{name}.json").write_text(tok.to_str(pretty=False) + "\n", encoding="utf-8")

    write_json(OUT / "goldens_gpt2_style.json", goldens(base, corpus, 1, True))
    for name, tok in variants.items():
        write_json(OUT / f"goldens_{name}.json", goldens(tok, corpus, 3, False))
    if (DEEPSEEK_DIR / "tokenizer.json").exists():
        ds = Tokenizer.from_file(str(DEEPSEEK_DIR / "tokenizer.json"))
        g = goldens(ds, corpus, 1, True)
        g["with_bos"] = with_bos_cases(corpus)
        write_json(OUT / "goldens_deepseek_v3.json", g)
    else:
        print(f"warning: {DEEPSEEK_DIR} absent, DeepSeek goldens not written", file=sys.stderr)
    for p in sorted(OUT.iterdir()):
        print(f"{p.stat().st_size:>10}  {p.relative_to(REPO)}")


if __name__ == "__main__":
    main()
