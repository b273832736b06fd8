#!/usr/bin/env python3
"""Build small tokenizers with Hugging Face `tokenizers` and write golden files.

The C++ tokenizer must reproduce the `tokenizers` library exactly. This script
trains (or assembles) a handful of tokenizers that mirror the layouts of real
model families, runs a deterministic corpus through each of them and writes:

    <out>/corpus.jsonl                  {"text": ...} per line
    <out>/<name>/tokenizer.json         the tokenizer, as the library loads it
    <out>/<name>/tokenizer_config.json  a realistic transformers-style config
    <out>/<name>/cases.jsonl            one object per corpus string:
        {"text", "ids", "ids_special", "decoded", "decoded_skip_special"}

ids         = encode(text, add_special_tokens=False).ids
ids_special = encode(text, add_special_tokens=True).ids
decoded     = decode(ids, skip_special_tokens=False)
decoded_skip_special = decode(ids_special, skip_special_tokens=True)

Everything is seeded; running it twice gives byte-identical files
(`--check` regenerates into a temporary folder and compares).

Usage:
    python3 tools/make_tokenizer_goldens.py --out tests/fixtures/tokenizers
    python3 tools/make_tokenizer_goldens.py --out tests/fixtures/tokenizers --check
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import sys
import tempfile

import tokenizers
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

SEED = 0x6B696C6E  # "kiln"
EXPECTED_TOKENIZERS_VERSION = "0.22.1"

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPM = "\u2581"  # ▁

# --------------------------------------------------------------------------
# Text material (all written for this file).
# --------------------------------------------------------------------------

EN_WORDS = """
the of and to a in is that it was for on are as with his they I at be this have
from or one had by word but not what all were we when your can said there use an
each which she do how their if will up other about out many then them these so some
her would make like him into time has look two more write go see number no way could
people my than first water been call who oil its now find long down day did get come
made may part model token engine inference kernel memory cache tensor layer weight
batch thread queue server request latency throughput fast small large simple quick
brown fox jumps over lazy dog river mountain city morning evening light dark green
yellow red blue house garden window door street market bread coffee tea letter
story teacher student school library book page chapter question answer problem
system program function value string integer pointer buffer file stream error
result test build compile run debug release version update change keep start
stop open close read send receive wait begin end north south east west old new
good great little right big high different following another because through just
where most know should also after back years work well still every never between
under along while might something thought both often together always those
several children mother father night sea island bridge winter summer autumn spring
rain snow wind cloud stone tree forest bird song music paper ship harbour lamp
""".split()

EN_PROSE = [
    "The lighthouse keeper climbed the spiral stairs every evening, counting each of the "
    "one hundred and twelve steps as if the number might change overnight.",
    "Nobody in the village remembered who had planted the walnut tree by the old mill, "
    "but everyone agreed it was older than the church.",
    "She wrote the letter twice: once in pencil, to see how the words would sit, and once "
    "in ink, when she was sure she meant them.",
    "By the time the ferry reached the harbour, the fog had lifted and the town looked "
    "smaller and brighter than it had from the water.",
    "A good cache is invisible when it works and unforgettable when it does not.",
    "The kernel reads a tile of the weight matrix into shared memory, multiplies it by the "
    "activations, and writes the partial sums back before the next tile arrives.",
    "Our measurements show that latency grows slowly until the batch no longer fits in "
    "memory, and then it grows very quickly indeed.",
    "He packed three shirts, a notebook, two pencils and a map that was at least ten years "
    "out of date.",
    "When the rain finally stopped, the children ran outside to float paper boats along the "
    "gutters of the narrow street.",
    "The committee met on Tuesday, argued until Thursday, and on Friday decided to meet "
    "again next month.",
]

CONTRACTIONS = [
    "don't", "it's", "we're", "I've", "I'm", "you'll", "he'd", "she's", "they're",
    "can't", "won't", "isn't", "we'd", "you've", "I'll", "JOHN'S", "DON'T", "WE'RE",
    "I'VE", "YOU'LL", "HE'D", "I'M", "It'S", "they'Re", "o'clock", "rock'n'roll",
]

FR_WORDS = (
    "le la les été très français déjà où garçon naïve Noël cœur île hôpital forêt château "
    "élève à ça être première fenêtre crème brûlée voilà sœur maïs août œuvre façade "
    "Ça Élodie aujourd'hui l'été qu'il c'est d'accord"
).split()
DE_WORDS = (
    "Straße groß Fußball weiß Mädchen Grüße schön Übung Äpfel Öl über für und der die das "
    "nicht Donaudampfschifffahrtsgesellschaft Bäckerei heißen Maß Gemütlichkeit Größe "
    "STRASSE Spaß Brötchen Käse Tschüß"
).split()
ES_WORDS = (
    "niño año señor mañana España corazón canción ¿Qué ¡Hola! jalapeño pingüino cigüeña "
    "también está música árbol útil"
).split()
VI_WORDS = (
    "Tiếng Việt người những được không nước trường học Hà Nội thành phố Hồ Chí Minh cảm ơn "
    "xin chào đẹp quá phở bánh mì Đà Nẵng ngữ điện thoại"
).split()
OTHER_LATIN = (
    "ação coração São Paulo Łódź źdźbło żółw Kraków příliš žluťoučký kůň úpěl ďábelské ódy "
    "İstanbul ığdır şeker çay Ærø smørrebrød Åse Þórsmörk ðæt"
).split()
RU_WORDS = (
    "привет мир как дела спасибо большое Москва русский язык хорошо сегодня погода ёжик "
    "Ёлка съешь ещё этих мягких французских булок да выпей чаю Україна їжак ґанок "
    "Здравствуйте ПРИВЕТ"
).split()
EL_WORDS = (
    "Γειά σου κόσμε ευχαριστώ καλημέρα Αθήνα ελληνικά ψυχή λόγος ΑΒΓΔ άλφα ΐ ΰ "
    "Καλησπέρα θάλασσα ΟΔΥΣΣΕΥΣ"
).split()
AR_WORDS = (
    "مرحبا بالعالم شكرا العربية السلام عليكم كتاب مدرسة القاهرة اللغة كَتَبَ مُحَمَّد "
    "الذكاء الاصطناعي"
).split()
HE_WORDS = "שלום עולם תודה עברית ירושלים ספר בוקר טוב שָׁלוֹם מחשב".split()
HI_WORDS = (
    "नमस्ते दुनिया धन्यवाद हिन्दी भारत भाषा किताब पानी क्षत्रिय प्रेम विद्यालय आज मौसम "
    "अच्छा है"
).split()
OTHER_INDIC = "বাংলা ভাষা தமிழ் வணக்கம் తెలుగు ಕನ್ನಡ ગુજરાતી ਪੰਜਾਬੀ".split()
TH_WORDS = (
    "สวัสดี ครับ ค่ะ ภาษาไทย ขอบคุณ กรุงเทพมหานคร ประเทศ น้ำ ไม่ เป็นไร อร่อย มาก "
    "วันนี้ อากาศ ดี"
).split()
ZH_WORDS = (
    "你好 世界 中文 我们 今天 天气 很好 北京 人工智能 模型 推理 引擎 的 是 了 在 学习 机器 "
    "语言 计算机 繁體中文 這是 測試 上海 谢谢 朋友 时间 问题"
).split()
JA_WORDS = (
    "こんにちは 世界 日本語 ありがとう ございます カタカナ ひらがな 漢字 東京 テスト です "
    "ます 私は 学生 ラーメン ｶﾀｶﾅ ー 今日は 天気 いい ね コンピューター"
).split()
KO_WORDS = "안녕하세요 세계 한국어 감사합니다 서울 사랑해요 컴퓨터 모델 학교 오늘 날씨 좋아요".split()

EMOJI = [
    "😀", "😂", "🥲", "👍", "👍🏽", "👋🏿", "🙏🏻", "❤️", "❤", "🔥", "✨", "🚀", "🎉", "🤖",
    "👨\u200d👩\u200d👧\u200d👦", "🧑🏿\u200d💻", "👩\u200d🔬", "🏳️\u200d🌈", "🏴\u200d☠️",
    "🇺🇸", "🇯🇵", "🇩🇪", "🇧🇷", "🇺🇦", "1️⃣", "#️⃣", "©️", "™", "☕", "⌛", "🫠", "🦀", "🐍",
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
]

SPACE_LESS = {"th", "zh", "ja"}
LANG_WORDS = {
    "en": EN_WORDS, "fr": FR_WORDS, "de": DE_WORDS, "es": ES_WORDS, "vi": VI_WORDS,
    "latx": OTHER_LATIN, "ru": RU_WORDS, "el": EL_WORDS, "ar": AR_WORDS, "he": HE_WORDS,
    "hi": HI_WORDS, "indic": OTHER_INDIC, "th": TH_WORDS, "zh": ZH_WORDS, "ja": JA_WORDS,
    "ko": KO_WORDS,
}
SENTENCE_END = {"zh": "。", "ja": "。", "ar": ".", "hi": "।", "th": "", "el": ";"}

# Special-token text of every tokenizer below, plus near misses.
SPECIAL_TEXTS = [
    "<|endoftext|>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|im_start|>",
    "<|im_end|>", "<s>", "</s>", "<unk>", "<pad>", "<bos>", "<eos>", "<start_of_turn>",
    "<end_of_turn>", "<tool_call>", "</tool_call>", "<mask>", "<think>", "</think>",
    "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
]
NEAR_MISSES = [
    "<|im_start", "im_start|>", "<|im_start |>", "<|IM_START|>", "<<|im_end|>>", "<|im_end|",
    "<|endoftext", "<|endoftext|", "endoftext|>", "< |endoftext|>", "<|end_of_text>", "<s >",
    "< s>", "<ss>", "</s", "<s", "s>", "</ s>", "<S>", "<unk", "<start_of_turn", "<end_of_turn >",
    "<mask", "mask>", "<tool_call", "<|eot_id", "<|begin_of_text", "<|", "|>", "<>", "</>",
    "<\uff5cbegin\u2581of\u2581sentence", "<0x41>", "<0xZZ>", "<0x4>",
]

CODE_TEMPLATES = [
    "def {name}(x, y=None):\n    \"\"\"Return the {name} of x.\"\"\"\n    if y is None:\n"
    "        return x * {num}\n    return x + y\n",
    "for i in range({num}):\n\tprint(f\"{{i:>4}} -> {{i ** 2}}\")\n",
    "class {Name}:\n    def __init__(self):\n        self.items = []  # TODO: {name}\n\n"
    "    def __len__(self) -> int:\n        return len(self.items)\n",
    "#include <vector>\n\nint {name}(const std::vector<int>& v) {{\n    int s = 0;\n"
    "    for (int x : v) s += x;\n    return s * {num};\n}}\n",
    "template <typename T>\nstruct {Name} {{\n  T value{{}};\n  constexpr T get() const noexcept "
    "{{ return value; }}\n}};\n",
    "if (ptr != nullptr && ptr->{name} >= {num}) {{\n\tptr->{name} -= {num}; // clamp\n}} else "
    "{{ return -1; }}\n",
    "{{\"{name}\": {num}, \"enabled\": true, \"tags\": [\"a\", \"b\"], \"nested\": "
    "{{\"x\": null, \"y\": -{num}.5e-3}}}}",
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{Name}</title>"
    "</head>\n<body>\n  <p class=\"note\">Hello &amp; welcome, {name}!</p>\n</body>\n</html>\n",
    "SELECT id, {name} FROM users WHERE age >= {num} ORDER BY {name} DESC LIMIT 10;",
    "fn {name}(v: &[u32]) -> u64 {{\n    v.iter().map(|&x| x as u64).sum::<u64>() + {num}\n}}\n",
    "$ ./build.sh --jobs={num} && ctest -L cpu --output-on-failure 2>&1 | tee log.txt",
    "x = [{num}, {num}, {num}]\ny = {{k: v for k, v in zip('abc', x)}}\nassert y['a'] == {num}\n",
    "    return a[i] + b[j];\n\n\n  }}\n}}\n",
    "const {name} = async () => {{ await fetch(`/api/v1/{name}?id=${{id}}`); }};",
    "std::printf(\"%d\\n\", {num});\n#define {NAME}_MAX ({num}u)\n",
]
IDENTS = [
    "count", "total", "parse_args", "kv_cache", "tokenize", "rmsnorm", "matmul", "softmax",
    "load_weights", "n_heads", "max_seq_len", "rope_theta", "buffer", "offset", "stride",
]

URLS = [
    "https://example.com/path/to/page?query=1&lang=en#section-2",
    "http://localhost:8080/v1/chat/completions",
    "ftp://files.example.org/pub/README.txt",
    "https://en.wikipedia.org/wiki/Byte_pair_encoding",
    "mailto:someone@example.com",
    "www.example.co.uk/a_b-c~d",
    "https://例子.测试/路径?键=值",
    "user.name+tag@sub.example.io",
]


def _cap(word: str) -> str:
    return word[:1].upper() + word[1:]


def sentence(rng: random.Random, lang: str, lo: int = 3, hi: int = 14) -> str:
    words = LANG_WORDS[lang]
    n = rng.randint(lo, hi)
    if lang == "en":
        weights = [1.0 / (i + 2) for i in range(len(words))]
        picked = rng.choices(words, weights=weights, k=n)
        if rng.random() < 0.3:
            picked.insert(rng.randrange(len(picked) + 1), rng.choice(CONTRACTIONS))
        if rng.random() < 0.2:
            picked.insert(rng.randrange(len(picked) + 1), str(rng.randint(0, 5000)))
        text = " ".join(picked)
        text = _cap(text) + rng.choice([".", ".", ".", "!", "?", ",", ";", ":", "..."])
        return text
    picked = [rng.choice(words) for _ in range(n)]
    sep = "" if lang in SPACE_LESS else " "
    text = sep.join(picked)
    if lang not in SPACE_LESS:
        text = _cap(text)
    return text + SENTENCE_END.get(lang, rng.choice([".", "!", "?", ""]))


def code_snippet(rng: random.Random) -> str:
    name = rng.choice(IDENTS)
    tmpl = rng.choice(CODE_TEMPLATES)
    return tmpl.format(
        name=name,
        Name="".join(_cap(p) for p in name.split("_")),
        NAME=name.upper(),
        num=rng.choice([0, 1, 2, 7, 16, 42, 100, 255, 1024, 4096, 65535]),
    )


def number_string(rng: random.Random) -> str:
    kind = rng.randrange(12)
    if kind == 0:
        return str(rng.randint(0, 10 ** rng.randint(1, 25)))
    if kind == 1:
        return f"{rng.uniform(-1000, 1000):.{rng.randint(1, 9)}f}"
    if kind == 2:
        return f"{rng.randint(1000, 10**10):,}"
    if kind == 3:
        return f"{rng.randint(1900, 2099)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == 4:
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    if kind == 5:
        return f"+1 ({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
    if kind == 6:
        return f"v{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 300)}"
    if kind == 7:
        return f"0x{rng.getrandbits(rng.choice([8, 16, 32, 64])):X}"
    if kind == 8:
        return f"{rng.uniform(0, 10):.3e}"
    if kind == 9:
        return f"{rng.randint(0, 100)}%"
    if kind == 10:
        return f"${rng.randint(1, 99999)}.{rng.randint(0, 99):02d}"
    return " ".join(str(rng.randint(0, 9999)) for _ in range(rng.randint(2, 8)))


WS_RUNS = [
    " ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n", "  \n", "\n ",
    " \t ", "\u00a0", "\u3000", "\u2009", "\u200b", "\r", "\x0b", "\x0c", "\u2028", "\u0085",
]


def whitespace_string(rng: random.Random) -> str:
    pool = EN_WORDS[:60] + CONTRACTIONS[:6] + ["42", "3.14", "()", "{}", ";", "#", "--"]
    parts = []
    if rng.random() < 0.5:
        parts.append(rng.choice(WS_RUNS))
    for _ in range(rng.randint(2, 10)):
        parts.append(rng.choice(pool))
        parts.append(rng.choice(WS_RUNS) if rng.random() < 0.6 else " ")
    if rng.random() < 0.5:
        parts.pop()
    return "".join(parts)


# Ranges of code points used for random "noise" strings.
CP_RANGES = [
    (0x20, 0x7E), (0xA0, 0x17F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
    (0x590, 0x5FF), (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF),
    (0x2000, 0x206F), (0x2190, 0x21FF), (0x2500, 0x257F), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
    (0xAC00, 0xD7A3), (0xE000, 0xE0FF), (0xFF00, 0xFFEF), (0x1D400, 0x1D7FF),
    (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0x10300, 0x1034F),
]


def random_codepoints(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 24)):
        lo, hi = rng.choice(CP_RANGES)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def chat_string(rng: random.Random) -> str:
    role = rng.choice(["system", "user", "assistant"])
    body = sentence(rng, rng.choice(["en", "en", "fr", "zh", "ru"]), 1, 8)
    style = rng.randrange(6)
    if style == 0:
        return f"<|im_start|>{role}\n{body}<|im_end|>\n"
    if style == 1:
        return (f"<|start_header_id|>{role}<|end_header_id|>\n\n{body}<|eot_id|>"
                if rng.random() < 0.5 else f"<|begin_of_text|>{body}<|eot_id|>")
    if style == 2:
        return f"<start_of_turn>{role}\n{body}<end_of_turn>\n"
    if style == 3:
        return f"<s>[INST] {body} [/INST] {sentence(rng, 'en', 1, 6)}</s>"
    if style == 4:
        return f"{body}<|endoftext|>{sentence(rng, 'en', 1, 6)}"
    a, b = rng.choice(SPECIAL_TEXTS), rng.choice(NEAR_MISSES)
    sep1, sep2 = rng.choice(["", " ", "\n", "  "]), rng.choice(["", " ", "\n"])
    return f"{sep1}{a}{sep2}{b}{body}{rng.choice(SPECIAL_TEXTS)}"


def mixed_string(rng: random.Random) -> str:
    langs = list(LANG_WORDS)
    parts = []
    for _ in range(rng.randint(2, 6)):
        r = rng.random()
        if r < 0.6:
            parts.append(sentence(rng, rng.choice(langs), 1, 5))
        elif r < 0.75:
            parts.append(rng.choice(EMOJI))
        elif r < 0.9:
            parts.append(number_string(rng))
        else:
            parts.append(rng.choice(URLS))
    return rng.choice(["", " ", "\n"]).join(parts) if rng.random() < 0.3 else " ".join(parts)


def punctuation_string(rng: random.Random) -> str:
    punct = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["...", "--", "—", "–", "«", "»",
                                                          "“", "”", "‘", "’", "¿", "¡", "…", "•"]
    parts = []
    for _ in range(rng.randint(2, 8)):
        if rng.random() < 0.5:
            parts.append("".join(rng.choice(punct) for _ in range(rng.randint(1, 6))))
        else:
            parts.append(rng.choice(EN_WORDS[:80] + CONTRACTIONS))
        if rng.random() < 0.5:
            parts.append(" ")
    return "".join(parts)


def long_string(rng: random.Random, kind: str, target: int = 2000) -> str:
    parts: list[str] = []
    total = 0
    while total < target:
        if kind == "en":
            s = rng.choice(EN_PROSE) if rng.random() < 0.4 else sentence(rng, "en", 6, 20)
            s += rng.choice([" ", " ", " ", "\n", "\n\n"])
        elif kind == "mixed":
            s = mixed_string(rng) + rng.choice([" ", "\n"])
        elif kind == "code":
            s = code_snippet(rng) + "\n"
        elif kind == "cjk":
            s = sentence(rng, rng.choice(["zh", "ja", "ko"]), 4, 12)
        elif kind == "digits":
            s = str(rng.getrandbits(64))
        elif kind == "ws":
            s = whitespace_string(rng)
        else:
            raise ValueError(kind)
        parts.append(s)
        total += len(s)
    return "".join(parts)[:target]


def hand_written_corpus() -> list[str]:
    c = [
        "", " ", "  ", "\n", "\t", "\n\n\n", "  \t  ", " \n", "\r\n", "a", "A", "I", ".",
        "Hello world", "Hello, world!", " Hello world", "Hello world ", "  Hello  world  ",
        "hello\nworld", "hello \nworld", "hello  \n  world", "hello\n\n\nworld",
        "line one\r\nline two\r\n", "tab\tseparated\tvalues\t", "\ttabbed start",
        "trailing spaces   ", "   leading spaces", "a  b   c    d", "a\u00a0b", "a\u3000b",
        "x \u00a0 y", "word\u200bjoined", "\ufeffBOM at start", "nul\x00byte", "bell\x07and\x7fdel",
        "form\x0cfeed and vertical\x0btab", "next\u0085line", "line\u2028separator",
        "unit\x1fseparator\x1crecord",
        "The quick brown fox jumps over the lazy dog.",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!",
        "It's a dog's life; they're sure we've seen what I'm saying, you'll see, he'd agree.",
        "IT'S JOHN'S CAR. WE'RE LATE. I'VE GOT IT. YOU'LL SEE. HE'D KNOW. I'M HERE.",
        "it'ſ the long s", "don't'll've", "''s", "'s", "'S", "' s", "dogs' bowls", "rock'n'roll",
        "It’s a curly apostrophe", "O'Brien's", "'twas", "y'all'd've",
        "café", "cafe\u0301", "naïve résumé", "nai\u0308ve re\u0301sume\u0301", "Straße", "STRASSE",
        "Tiếng Việt có dấu", "Tie\u0302\u0301ng Vie\u0323\u0302t", "Ångström \u212bngstr\u00f6m",
        "A\u030angstro\u0308m", "\u2126 ohm vs \u03a9 omega", "\u1100\u1161\u11a8 jamo",
        "ﬁne ﬂour ﬀ", "①②③ ⅰⅱⅲ ½ ¾ ² ³", "x² + y² = z²", "Ⅻ o'clock", "e\u0301\u0301\u0301",
        "\u0301 leading combining mark", "Zalgo: Z\u0335\u0321\u031ba\u0334l\u0337g\u0336o",
        "Привет, мир! Как дела?", "Съешь же ещё этих мягких французских булок, да выпей чаю.",
        "Γειά σου Κόσμε! Καλημέρα.", "ΟΔΥΣΣΕΥΣ ὀδυσσεύς", "مرحبا بالعالم", "السلام عليكم ورحمة الله",
        "مُحَمَّد كَتَبَ", "שלום עולם", "שָׁלוֹם", "नमस्ते दुनिया", "क्षत्रिय विद्यालय",
        "हिन्दी भाषा १२३ ४५६", "สวัสดีครับ", "ภาษาไทยง่ายนิดเดียว", "กรุงเทพมหานคร ๑๒๓",
        "你好，世界！", "人工智能模型推理引擎", "繁體中文測試", "我今天学习了1234个汉字。",
        "こんにちは世界", "日本語のテストです。カタカナとひらがなと漢字。", "ｶﾀｶﾅ ﾃｽﾄ", "東京タワー",
        "안녕하세요 세계", "한국어 텍스트 테스트입니다.", "বাংলা ভাষা", "தமிழ் வணக்கம்",
        "English 中文 日本語 한국어 Русский العربية עברית हिन्दी ไทย Ελληνικά",
        "😀", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "🇺🇸🇯🇵🇩🇪", "1️⃣2️⃣3️⃣",
        "I ❤️ NY", "🚀🚀🚀 to the moon", "emoji👍inside", "🧑🏿\u200d💻 coding", "🦀 + 🐍 = ?",
        "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f Scotland",
        "𝕳𝖊𝖑𝖑𝖔 𝔴𝔬𝔯𝔩𝔡", "𐍈 gothic", "𓀀𓀁 hieroglyphs", "🀄 mahjong", "\ue000 private use",
        "\U00020000 ext-B", "\ufffd replacement char",
        "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678901234567890",
        "3.14159", "1,000,000", "-42", "+7", "1e10", "6.02e23", "0x1F", "0b1010", "007",
        "2024-01-15", "12:34:56", "10%", "$19.99", "€5,00", "£3", "¥1000", "1st 2nd 3rd 4th",
        "١٢٣٤ ٥٦٧", "１２３４５", "٣.١٤", "৩৪৫", "abc123def456", "x1y22z333",
        "42 apples and 7 oranges", "Version 3.11.7 (build 20240115)",
        "def add(a, b):\n    return a + b\n",
        "if x:\n\tpass\n\telse:\n\t\treturn None",
        "int main() {\n    std::cout << \"hi\" << std::endl;\n    return 0;\n}\n",
        "for (size_t i = 0; i < n; ++i) { a[i] += b[i]; }",
        "{\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"a\": null}}",
        "<div class=\"x\"><a href=\"/\">Home</a></div>",
        "    indented four\n        indented eight\n",
        "x=1;y=2;z=x+y", "a->b, c::d, e.f, g?.h, i??j", "#!/usr/bin/env python3",
        "// comment\n/* block */\n# hash", "```python\nprint('hi')\n```",
        "!!!", "???", "...", "?!?!", "---", "***", "___", "=====", "!@#$%^&*()_+",
        "Wait... what?!", "«quotes» “double” ‘single’", "—em dash—en–dash", "¿Qué? ¡Sí!",
        "(parenthesized) [bracketed] {braced} <angled>", "a.b.c.d", "ellipsis…",
        "https://example.com/path/to/page?query=1&lang=en#section-2",
        "Visit http://localhost:8080/v1/chat/completions now", "someone@example.com",
        "<|endoftext|>", "Hello<|endoftext|>World", "Hello <|endoftext|> World",
        "<|endoftext|><|endoftext|>", " <|endoftext|>", "<|endoftext|> ",
        "<|im_start|>user\nhi<|im_end|>", "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start", "<|im_start|", "im_start|>", "<|IM_START|>", "<<|im_end|>>",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
        "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "text<|eot_id|>more",
        "<s>", "</s>", "<s>Hello</s>", "<s> Hello </s>", "<s>[INST] Hi [/INST] Hello</s>",
        "a<s>b", "a <s> b", "<unk>", "<s ", "< s>", "</s", "<S>",
        "<bos>", "<eos>", "<pad>", "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
        "<start_of_turn>", "<end_of_turn>", "<tool_call>{\"name\": \"f\"}</tool_call>",
        "<mask>", "The <mask> sat.", "The<mask>sat.", "The  <mask>  sat.", "<think>hmm</think>",
        "<think>\nsteps\n</think>\n\nanswer",
        "<\uff5cbegin\u2581of\u2581sentence\uff5c>Hi",
        "\u2581", "\u2581\u2581", "\u2581leading metaspace", "a\u2581b", " \u2581x",
        "Ġ", "Ċ", "ĠĠhello", "Ċ newline char", "ĉ",
        "<0x41>", "<0x0A>", "<0xE4><0xB8><0xAD>", "<0x>",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "ab" * 40, "          ", "\n" * 12, "\t" * 7, " \n" * 6, "..." * 12, "-" * 80,
        "=" * 33 + " header " + "=" * 33,
    ]
    c.extend(EN_PROSE)
    c.extend(URLS)
    c.extend(SPECIAL_TEXTS)
    c.extend(NEAR_MISSES)
    c.extend(EMOJI)
    return c


def generated_corpus(rng: random.Random) -> list[str]:
    out: list[str] = []
    langs = list(LANG_WORDS)
    for _ in range(90):
        out.append(sentence(rng, rng.choice(langs)))
    for _ in range(50):
        out.append(mixed_string(rng))
    for _ in range(50):
        out.append(whitespace_string(rng))
    for _ in range(40):
        out.append(number_string(rng))
    for _ in range(30):
        out.append(code_snippet(rng))
    for _ in range(40):
        out.append(chat_string(rng))
    for _ in range(35):
        out.append(punctuation_string(rng))
    for _ in range(30):
        out.append(random_codepoints(rng))
    for _ in range(15):
        out.append("".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 6))))
    for kind in ["en", "mixed", "code", "cjk", "digits", "ws"]:
        out.append(long_string(rng, kind))
    return out


def build_corpus() -> list[str]:
    rng = random.Random(SEED)
    items = hand_written_corpus() + generated_corpus(rng)
    return list(dict.fromkeys(items))  # dedupe, keep order


def training_texts(corpus: list[str]) -> list[str]:
    """Text the tokenizers are trained on: weighted towards English and code."""
    rng = random.Random(SEED + 1)
    out: list[str] = []
    for _ in range(6000):
        out.append(sentence(rng, "en", 4, 24))
    for _ in range(600):
        out.append(rng.choice(EN_PROSE))
    for lang in LANG_WORDS:
        if lang == "en":
            continue
        n = 400 if lang in ("fr", "de", "es", "ru", "zh") else 150
        for _ in range(n):
            out.append(sentence(rng, lang))
    for _ in range(1500):
        out.append(code_snippet(rng))
    for _ in range(600):
        out.append(number_string(rng))
    for _ in range(600):
        out.append(whitespace_string(rng))
    for _ in range(300):
        out.append(mixed_string(rng))
    for _ in range(200):
        out.append(punctuation_string(rng))
    out.extend(corpus)
    return out


# --------------------------------------------------------------------------
# Tokenizer construction.
# --------------------------------------------------------------------------


def tok_json(tok: Tokenizer) -> dict:
    return json.loads(tok.to_str())


def train_bpe(tok: Tokenizer, texts: list[str], **trainer_kwargs) -> Tokenizer:
    trainer = trainers.BpeTrainer(show_progress=False, **trainer_kwargs)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def top_chars(texts: list[str], k: int, transform=None, always: str = "") -> list[str]:
    counts: dict[str, int] = {}
    for t in texts:
        if transform is not None:
            t = transform(t)
        for ch in t:
            counts[ch] = counts.get(ch, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], ord(kv[0])))
    chosen = [ch for ch, _ in ranked[:k]]
    for ch in always:
        if ch not in chosen:
            chosen.append(ch)
    return sorted(chosen, key=ord)


def prune_bpe(vocab: dict[str, int], merges: list, alphabet: list[str], banned: set[str]):
    """Drop banned tokens (and every merge built on them) from a trained BPE.

    Returns (tokens in original id order, merges as tuples)."""
    available = {t for t in alphabet if t in vocab and t not in banned}
    kept_merges = []
    for m in merges:
        a, b = (m.split(" ", 1) if isinstance(m, str) else m)
        if a in available and b in available and (a + b) not in banned:
            kept_merges.append((a, b))
            available.add(a + b)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t in available]
    return tokens, kept_merges


def byte_tokens() -> list[str]:
    return [f"<0x{b:02X}>" for b in range(256)]


def special(content: str) -> AddedToken:
    return AddedToken(content, special=True, normalized=False)


def build_gpt2(texts: list[str]) -> tuple[Tokenizer, dict]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    train_bpe(tok, texts, vocab_size=1999,
              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
              special_tokens=[special("<|endoftext|>")])
    cfg = dict(add_bos_token=False, add_prefix_space=False, bos_token="<|endoftext|>",
               eos_token="<|endoftext|>", unk_token="<|endoftext|>", model_max_length=1024,
               tokenizer_class="GPT2Tokenizer")
    return tok, {"legacy_merges": True, "config": cfg}


def _llama3_like(texts, pattern, vocab_size, normalizer):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    train_bpe(tok, texts, vocab_size=vocab_size,
              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    return tok


def build_llama3(texts: list[str]) -> tuple[Tokenizer, dict]:
    tok = _llama3_like(texts, LLAMA3_PATTERN, 2503, None)
    d = tok_json(tok)
    # A trained vocab is reachable through its merges, so ignore_merges would change
    # nothing. Add frequent whole pre-tokens that the merges cannot build (real
    # Llama-3 vocabularies have such entries): with ignore_merges=True they come out
    # as one token, with ignore_merges=False they would be split.
    counts: dict[str, int] = {}
    for t in texts:
        for piece, _ in tok.pre_tokenizer.pre_tokenize_str(t):
            counts[piece] = counts.get(piece, 0) + 1
    vocab = d["model"]["vocab"]
    extra = []
    for piece, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if piece not in vocab and len(tok.model.tokenize(piece)) >= 2:
            extra.append(piece)
            if len(extra) == 41:
                break
    for piece in extra:
        vocab[piece] = len(vocab)
    d["model"]["ignore_merges"] = True
    tok = Tokenizer.from_str(json.dumps(d))
    tok.add_special_tokens([special(t) for t in
                            ["<|begin_of_text|>", "<|end_of_text|>",
                             "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A:0",
            pair="<|begin_of_text|> $A:0 <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    cfg = dict(add_bos_token=True, add_eos_token=False, bos_token="<|begin_of_text|>",
               eos_token="<|end_of_text|>", model_max_length=131072,
               tokenizer_class="PreTrainedTokenizerFast",
               model_input_names=["input_ids", "attention_mask"])
    return tok, {"legacy_merges": False, "config": cfg}


def build_qwen2(texts: list[str]) -> tuple[Tokenizer, dict]:
    tok = _llama3_like(texts, QWEN2_PATTERN, 2311, normalizers.NFC())
    tok.add_special_tokens([special(t) for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    cfg = dict(add_bos_token=False, add_prefix_space=False, bos_token=None,
               eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
               errors="replace", model_max_length=32768, tokenizer_class="Qwen2Tokenizer",
               split_special_tokens=False)
    return tok, {"legacy_merges": False, "config": cfg}


SPM_SPLIT = Regex("\u2581[^\u2581]+|\u2581+(?=\u2581)|\u2581+|[^\u2581]+")


def build_spm_llama2(texts: list[str]) -> tuple[Tokenizer, dict]:
    specials = ["<unk>", "<s>", "</s>"]
    norm = normalizers.Sequence([normalizers.Prepend(SPM), normalizers.Replace(" ", SPM)])

    def normalize(t: str) -> str:
        return (SPM + t.replace(" ", SPM)) if t else t

    alphabet = top_chars(texts, 190, normalize, always=SPM)
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.normalizer = norm
    trainer_tok.pre_tokenizer = pre_tokenizers.Split(SPM_SPLIT, behavior="isolated")
    target = 1789
    train_bpe(trainer_tok, texts, vocab_size=target - len(specials) - 256,
              initial_alphabet=alphabet, limit_alphabet=len(alphabet))
    d = tok_json(trainer_tok)
    banned = set(specials) | set(byte_tokens())
    tokens, merges = prune_bpe(d["model"]["vocab"], d["model"]["merges"], alphabet, banned)
    vocab = {t: i for i, t in enumerate(specials + byte_tokens() + tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.normalizer = norm
    tok.decoder = decoders.Sequence([
        decoders.Replace(SPM, " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(content=" ", left=1, right=0)])
    tok.add_special_tokens([special(t) for t in specials])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)])
    cfg = dict(add_bos_token=True, add_eos_token=False, bos_token="<s>", eos_token="</s>",
               unk_token="<unk>", pad_token=None, legacy=True, model_max_length=4096,
               tokenizer_class="LlamaTokenizer", padding_side="right",
               sp_model_kwargs={})
    return tok, {"legacy_merges": True, "config": cfg}


def build_spm_metaspace(texts: list[str]) -> tuple[Tokenizer, dict]:
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]

    def normalize(t: str) -> str:
        return (SPM + t.replace(" ", SPM)) if t else t

    alphabet = top_chars(texts, 230, normalize, always=SPM)
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SPM, prepend_scheme="first", split=True)
    target = 2157
    train_bpe(trainer_tok, texts, vocab_size=target - len(specials) - 256,
              initial_alphabet=alphabet, limit_alphabet=len(alphabet))
    d = tok_json(trainer_tok)
    banned = set(specials) | set(byte_tokens()) | {"<tool_call>", "</tool_call>"}
    tokens, merges = prune_bpe(d["model"]["vocab"], d["model"]["merges"], alphabet, banned)
    vocab = {t: i for i, t in enumerate(specials + byte_tokens() + tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPM, prepend_scheme="first",
                                                 split=False)
    # Metaspace must come first: it turns every ▁ of the *first* token into nothing
    # (not only a leading one), so running it after Fuse would delete all spaces.
    tok.decoder = decoders.Sequence([
        decoders.Metaspace(replacement=SPM, prepend_scheme="first", split=False),
        decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([special(t) for t in specials])
    # Non-special added tokens, beyond the model vocab.
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False),
                    AddedToken("</tool_call>", special=False, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A:0", pair="<bos>:0 $A:0 <bos>:1 $B:1",
        special_tokens=[("<bos>", vocab["<bos>"])])
    cfg = dict(add_bos_token=True, add_eos_token=False, bos_token="<bos>", eos_token="<eos>",
               pad_token="<pad>", unk_token="<unk>", model_max_length=8192,
               tokenizer_class="GemmaTokenizer", spaces_between_special_tokens=False,
               additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    return tok, {"legacy_merges": False, "config": cfg}


def build_bytelevel_digits(texts: list[str]) -> tuple[Tokenizer, dict]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    train_bpe(tok, texts, vocab_size=1531,
              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
              special_tokens=[special("<s>"), special("<pad>"), special("</s>")])
    tok.add_special_tokens([
        AddedToken("<mask>", special=True, normalized=False, lstrip=True),
        special("<\uff5cbegin\u2581of\u2581sentence\uff5c>"),
    ])
    tok.add_tokens([AddedToken("<think>", special=False, normalized=True),
                    AddedToken("</think>", special=False, normalized=True, rstrip=True)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A:0 </s>", pair="<s>:0 $A:0 </s>:0 </s>:1 $B:1 </s>:1",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    cfg = dict(add_bos_token=True, add_eos_token=True, add_prefix_space=True, bos_token="<s>",
               eos_token="</s>", pad_token="<pad>", mask_token="<mask>", model_max_length=2048,
               tokenizer_class="PreTrainedTokenizerFast")
    return tok, {"legacy_merges": False, "config": cfg}


BUILDERS = [
    ("bytelevel-gpt2", build_gpt2),
    ("bytelevel-llama3", build_llama3),
    ("bytelevel-qwen2", build_qwen2),
    ("spm-llama2", build_spm_llama2),
    ("spm-metaspace", build_spm_metaspace),
    ("bytelevel-digits", build_bytelevel_digits),
]


# --------------------------------------------------------------------------
# Output.
# --------------------------------------------------------------------------


def dump_line(obj) -> str:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    # Keep every record on one physical line even for readers that split on
    # Unicode line breaks (these can only occur inside JSON strings here).
    for ch in ("\u0085", "\u2028", "\u2029"):
        text = text.replace(ch, "\\u%04x" % ord(ch))
    return text + "\n"


def tokenizer_json_text(tok: Tokenizer, legacy_merges: bool) -> str:
    d = tok_json(tok)
    if legacy_merges:
        merges = d["model"]["merges"]
        for a, b in merges:
            assert " " not in a and " " not in b, (a, b)
        d["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    # Pretty top level, one vocab entry / merge per line: small and diffable.
    model = d.pop("model")
    vocab = model.pop("vocab")
    merges = model.pop("merges")
    head = json.dumps(d, ensure_ascii=False, indent=2)
    assert head.endswith("}")
    mhead = json.dumps(model, ensure_ascii=False, indent=4)[:-1].rstrip()
    vocab_lines = ",\n".join(f"      {json.dumps(k, ensure_ascii=False)}: {v}"
                             for k, v in vocab.items())
    merge_lines = ",\n".join(f"      {json.dumps(m, ensure_ascii=False, separators=(',', ':'))}"
                             for m in merges)
    mhead = mhead.replace("\n", "\n  ")
    text = (head[:-1].rstrip() + ',\n  "model": ' + mhead + ',\n    "vocab": {\n'
            + vocab_lines + '\n    },\n    "merges": [\n' + merge_lines + "\n    ]\n  }\n}\n")
    # Must be equivalent to what the library wrote.
    reparsed = json.loads(text)
    expect = tok_json(tok)
    if legacy_merges:
        expect["model"]["merges"] = [f"{a} {b}" for a, b in expect["model"]["merges"]]
    assert reparsed == expect
    return text


def config_text(tok: Tokenizer, cfg: dict) -> str:
    full = dict(cfg)
    full["added_tokens_decoder"] = {
        str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                 "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special}
        for i, t in sorted(tok.get_added_tokens_decoder().items())
    }
    full["clean_up_tokenization_spaces"] = False
    return json.dumps(full, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def make_cases(tok: Tokenizer, corpus: list[str]) -> list[dict]:
    cases = []
    for s in corpus:
        ids = tok.encode(s, add_special_tokens=False).ids
        ids_special = tok.encode(s, add_special_tokens=True).ids
        cases.append({
            "text": s,
            "ids": ids,
            "ids_special": ids_special,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids_special, skip_special_tokens=True),
        })
    return cases


def generate(out_dir: str, verbose: bool = True) -> list[dict]:
    os.makedirs(out_dir, exist_ok=True)
    corpus = build_corpus()
    assert len(corpus) >= 500, len(corpus)
    with open(os.path.join(out_dir, "corpus.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for s in corpus:
            f.write(dump_line({"text": s}))
    texts = training_texts(corpus)
    summary = []
    for name, builder in BUILDERS:
        tok, meta = builder(texts)
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        tj_path = os.path.join(folder, "tokenizer.json")
        with open(tj_path, "w", encoding="utf-8", newline="\n") as f:
            f.write(tokenizer_json_text(tok, meta["legacy_merges"]))
        # Goldens come from the file as written, loaded fresh.
        loaded = Tokenizer.from_file(tj_path)
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8",
                  newline="\n") as f:
            f.write(config_text(loaded, meta["config"]))
        cases = make_cases(loaded, corpus)
        # Determinism: a second, independent load must agree exactly,
        # and so must the in-memory tokenizer the file was written from.
        again = make_cases(Tokenizer.from_file(tj_path), corpus)
        assert again == cases, name
        assert make_cases(tok, corpus) == cases, name
        cases_path = os.path.join(folder, "cases.jsonl")
        with open(cases_path, "w", encoding="utf-8", newline="\n") as f:
            for c in cases:
                f.write(dump_line(c))
        info = stats(name, loaded, cases, tj_path, cases_path)
        summary.append(info)
    if verbose:
        print_summary(summary, corpus)
    return summary


def stats(name, tok, cases, tj_path, cases_path) -> dict:
    d = json.loads(tok.to_str())
    vocab = d["model"]["vocab"]
    byte_ids = {vocab[t] for t in byte_tokens() if t in vocab}
    unk = d["model"].get("unk_token")
    unk_id = vocab.get(unk) if unk else None
    return {
        "name": name,
        "model_vocab": len(vocab),
        "vocab_with_added": tok.get_vocab_size(with_added_tokens=True),
        "merges": len(d["model"]["merges"]),
        "cases": len(cases),
        "roundtrip": sum(c["decoded"] == c["text"] for c in cases),
        "byte_fallback_cases": sum(any(i in byte_ids for i in c["ids"]) for c in cases),
        "unk_cases": sum(unk_id is not None and unk_id in c["ids"] for c in cases),
        "tokens": sum(len(c["ids"]) for c in cases),
        "tokenizer_json_bytes": os.path.getsize(tj_path),
        "cases_bytes": os.path.getsize(cases_path),
    }


def print_summary(summary: list[dict], corpus: list[str]) -> None:
    print(f"tokenizers {tokenizers.__version__}; corpus: {len(corpus)} strings, "
          f"{sum(len(s) for s in corpus)} chars")
    cols = ["name", "model_vocab", "vocab_with_added", "merges", "cases", "roundtrip",
            "byte_fallback_cases", "unk_cases", "tokens", "tokenizer_json_bytes", "cases_bytes"]
    print("  ".join(cols))
    for s in summary:
        print("  ".join(str(s[c]) for c in cols))


def check(out_dir: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, verbose=False)
        cmp = filecmp.dircmp(tmp, out_dir)
        bad = []

        def walk(c, prefix=""):
            bad.extend(prefix + x for x in c.left_only + c.right_only + c.funny_files)
            for f in c.common_files:
                if not filecmp.cmp(os.path.join(c.left, f), os.path.join(c.right, f),
                                   shallow=False):
                    bad.append(prefix + f)
            for sub, sc in c.subdirs.items():
                walk(sc, prefix + sub + "/")

        walk(cmp)
        bad = [b for b in bad if not b.endswith("README.md")]
        if bad:
            print("goldens differ from a fresh run:", *bad, sep="\n  ")
            return 1
        print("goldens match a fresh run")
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/fixtures/tokenizers")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare with --out")
    args = ap.parse_args()
    if tokenizers.__version__ != EXPECTED_TOKENIZERS_VERSION:
        print(f"warning: tokenizers {tokenizers.__version__} != pinned "
              f"{EXPECTED_TOKENIZERS_VERSION}; goldens may differ", file=sys.stderr)
    if args.check:
        return check(args.out)
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
