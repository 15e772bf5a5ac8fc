// The training text of the tiny models' tokenizer: written for this project (English prose, chat
// replies, code, JSON, numbers and a little of several other languages), so the vocabulary is the
// same everywhere and needs no files. Changing it changes every tiny tokenizer.
#include <string>
#include <vector>

#include "engine/tokenizer/tiny_tokenizer.h"

namespace r2::tokenizer {
namespace {

constexpr const char* kDocuments[] = {
    R"corpus(The harbour town woke slowly. Fishing boats came in before the sun was up, and by the
time the bakery opened its shutters the gulls were already arguing over the scraps on the quay.
Mara walked the length of the sea wall every morning. She counted the boats, she counted the
lamps that were still lit, and she counted the steps down to the water: there were forty-two of
them, worn smooth in the middle where people had walked for two hundred years.

On the morning the lighthouse went dark, she counted again, because she did not believe it.
The lamp at the top of the tower had burned every night of her life. Now the glass was grey and
the keeper's door stood open, swinging a little in the wind.

"Hello?" she called. Nobody answered. She climbed the spiral stair, one hand on the cold rail,
and found the keeper's logbook open on the desk. The last line read: "Wind from the north-east,
rising. Lamp trimmed at nine. Something is moving out past the reef."
)corpus",
    R"corpus(A good recipe for a simple loaf of bread needs only four things: flour, water, salt and
yeast. Mix 500 grams of flour with 350 millilitres of warm water and let it rest for twenty
minutes. Add 10 grams of salt and 7 grams of dried yeast, then knead the dough for ten minutes
until it is smooth and springs back when you press it. Leave it covered in a warm place for one
to two hours, until it has doubled in size. Shape it, let it rise again for forty minutes, and
bake it at 230 degrees for about thirty-five minutes. The loaf is done when it sounds hollow
when you tap the bottom. Let it cool before you cut it; the crumb is still cooking inside.
)corpus",
    R"corpus(User: Can you explain what a tokenizer does?
Assistant: Sure! A tokenizer turns text into a sequence of integers that a language model can
read. Most modern models use byte pair encoding. The tokenizer starts from single bytes and
learns which pairs of symbols appear together most often, then merges them into new tokens.
After training, common words such as "the", "and" or "model" become one token each, while rare
words are split into smaller pieces. Because every byte has its own token, any string can be
encoded, even text in a language the tokenizer has never seen, or an emoji like 🙂.

User: Why do the ids matter?
Assistant: The model only ever sees the ids. Each id selects one row of the embedding table, so
the tokenizer and the model must agree exactly. If the tokenizer produced an id larger than the
embedding table, the model could not look it up at all. That is why a server checks the
vocabulary size when it loads a model and refuses a tokenizer that does not fit.

User: What is a special token?
Assistant: A special token is a token with a fixed meaning, such as the beginning of a sentence,
the end of a sentence, or the start of a tool call. The tokenizer matches its exact text before
anything else, so it always becomes a single id and is never split into pieces.
)corpus",
    R"corpus(I think the best way to answer this question is to break it into steps.

First, let's look at what we know. The train leaves the station at 14:05 and travels at 80
kilometres per hour. The second train leaves at 14:35 and travels at 120 kilometres per hour.
We want to know when the second train catches up with the first.

Second, in thirty minutes the first train covers 40 kilometres. The second train gains 40
kilometres per hour on it, so it needs exactly one hour to close the gap.

Therefore the second train catches up at 15:35, after travelling 120 kilometres. Let me check:
the first train has then been moving for 1.5 hours, and 1.5 * 80 = 120. The answer is correct.
)corpus",
    R"corpus(#include <cstdint>
#include <string>
#include <vector>

// Returns the sum of the values, or zero for an empty list.
int64_t Sum(const std::vector<int64_t>& values) {
  int64_t total = 0;
  for (int64_t value : values) total += value;
  return total;
}

class Counter {
 public:
  explicit Counter(std::string name) : name_(std::move(name)) {}
  void Increment() { ++count_; }
  int64_t count() const { return count_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  int64_t count_ = 0;
};

int main(int argc, char** argv) {
  std::vector<int64_t> values = {1, 2, 3, 4, 5};
  Counter counter("requests");
  for (int i = 0; i < argc; ++i) counter.Increment();
  return Sum(values) == 15 && counter.count() > 0 ? 0 : 1;
}
)corpus",
    R"corpus(import json
import sys


def load_config(path):
    """Reads a JSON file and returns the parsed object."""
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def main(argv):
    if len(argv) < 2:
        print("usage: tool.py CONFIG", file=sys.stderr)
        return 1
    config = load_config(argv[1])
    for key, value in sorted(config.items()):
        print(f"{key} = {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
)corpus",
    R"corpus({"name": "get_weather", "description": "Get the current weather for a city.",
 "parameters": {"type": "object", "properties": {"city": {"type": "string",
 "description": "The name of the city"}, "unit": {"type": "string", "enum": ["celsius",
 "fahrenheit"]}}, "required": ["city"]}}

```json
{"city": "Lisbon", "unit": "celsius"}
```

The weather in Lisbon is sunny with a temperature of 24 degrees celsius and a light wind from
the west. Tomorrow will be cloudy, with a chance of rain in the evening.

```json
{"id": "call_001", "type": "function", "function": {"name": "search", "arguments":
"{\"query\": \"opening hours of the city library\"}"}}
```
)corpus",
    R"corpus(# Running the server

1. Build the project with `cmake --build build -j 8`.
2. Write a small test model: `r2serve make-tiny-model --out /tmp/tiny`.
3. Start the server: `r2serve serve --model /tmp/tiny --port 8000`.
4. Send a request:

```bash
curl http://localhost:8000/v1/chat/completions \
  -H "Content-Type: application/json" \
  -d '{"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}]}'
```

The response is a JSON object with a list of choices. Each choice has a message with a role and
some content, and a finish reason such as "stop" or "length".
)corpus",
    R"corpus(Numbers appear everywhere: 0, 1, 2, 3, 10, 42, 100, 256, 1024, 2048, 4096, 65536, 3.14159,
2.71828, -17, +5, 1e-6, 0.5, 99.9%, $19.99, 2026-11-28, 12:30:45, 192.168.0.1, v1.2.3, #1234.
A year has 365 days, or 366 in a leap year. A day has 24 hours, 1440 minutes or 86400 seconds.
The answer is 7 * 6 = 42, and 2 ** 10 = 1024, and 1000000 / 8 = 125000.
)corpus",
    R"corpus(人工智能是计算机科学的一个分支，它研究如何让机器理解语言、识别图像并解决问题。
今天天气很好，我们一起去公园散步吧。你好，世界！这是一个用于测试的小型分词器。
語言模型は大量の文章から次の単語を予測することを学びます。こんにちは、元気ですか？
東京の空は今日も青いです。カタカナとひらがなも少し入れておきます。
안녕하세요, 오늘은 날씨가 정말 좋네요. 반갑습니다!
El modelo lee el texto token a token y predice la siguiente palabra. ¿Qué hora es? Mañana
iremos a la playa con los niños.
Le modèle apprend à partir de beaucoup de textes. Où est la gare, s'il vous plaît ? Très bien,
merci beaucoup.
Das Modell liest den Text und sagt das nächste Wort voraus. Schöne Grüße aus München, und
vielen Dank für die Hilfe.
Модель читает текст и предсказывает следующее слово. Привет, как дела? Спасибо большое.
Το μοντέλο διαβάζει το κείμενο. Γεια σου, κόσμε!
مرحبا بالعالم، هذا نص قصير للاختبار.
नमस्ते दुनिया, यह एक छोटा परीक्षण है।
Emoji: 😀 😂 👍 🎉 🚀 ❤️ 🌍 🍞 ☕ ✅ ❌ 🤖 👋🏽 👨‍👩‍👧
)corpus",
    R"corpus(The server keeps a queue of requests. When a new request arrives, the scheduler decides
whether it can start right away or has to wait. A running request needs memory for its cache,
one block for every sixteen tokens, and the scheduler will not start a request unless enough
blocks are free. When a request finishes, its blocks are returned to the pool, and the next
waiting request can begin. If memory runs out while requests are running, the newest request is
paused and its blocks are freed; it starts again later from the beginning of its prompt.

Every step, the engine runs the model once for all running requests together. Requests that are
still reading their prompt process many tokens in that step, and requests that are generating
produce one new token each. The new tokens are sampled with each request's own temperature,
top p and seed, turned back into text, and streamed to the client as soon as they are ready.
)corpus",
    R"corpus(Dear team,

Thank you for the meeting on Thursday. As we agreed, the next release will include the new
streaming interface, better error messages and support for stop sequences. Please send me your
notes by Monday, so that I can write the summary before the review on Wednesday afternoon.

If you have any questions, let me know. I will be in the office all week, except on Friday
morning, when I am visiting the customer in the north.

Best regards,
Jonas
)corpus",
    R"corpus(function fibonacci(n) {
  if (n < 2) return n;
  let a = 0, b = 1;
  for (let i = 2; i <= n; i++) {
    const next = a + b;
    a = b;
    b = next;
  }
  return b;
}

console.log(`fib(10) = ${fibonacci(10)}`);  // 55

SELECT name, COUNT(*) AS orders FROM customers JOIN orders ON customers.id = orders.customer_id
WHERE orders.created_at >= '2026-01-01' GROUP BY name ORDER BY orders DESC LIMIT 10;
)corpus",
    R"corpus(Once there was a small robot who lived in a library. Every night, after the last reader
had gone home, the robot rolled between the shelves and put the books back where they belonged.
It knew every title and every author, but it had never read a single story from beginning to
end, because there was always another book waiting to be shelved.

One night the robot found a book that had no title at all. The pages were blank, except for the
first one, which said: "Write what you remember." The robot thought for a long time. Then it
began to write about the readers, the rain on the windows, the smell of old paper, and the
quiet hours before morning. When the sun came up, the book was full, and the robot understood
that it had been reading stories all along.
)corpus",
    R"corpus(Question: Is it better to water plants in the morning or in the evening?
Answer: In most gardens the morning is better. The soil is cool, less water evaporates, and the
leaves dry quickly in the sun, which helps to prevent disease. Watering in the evening also
works, but water that stays on the leaves overnight can encourage mould. In very hot weather,
water deeply rather than often, so that the roots grow down into the soil.

Question: How many planets are there in the solar system?
Answer: There are eight planets: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and
Neptune. Pluto was called a planet until 2006, when it was reclassified as a dwarf planet.
)corpus",
    R"corpus(Okay, the user wants a short poem about autumn. Let me think about the images: falling
leaves, cold mornings, the smell of smoke, apples, shorter days. I should keep it to four lines
and make it rhyme.

The maple burns in red and gold,
The mornings come in grey and cold,
The apples fall, the swallows fly,
And evening comes before we sigh.

Wait, the last line is a little weak. Maybe "And smoke drifts up into the sky." That is better.
)corpus",
};

}  // namespace

std::vector<std::string> TinyTokenizerCorpus() {
  return std::vector<std::string>(std::begin(kDocuments), std::end(kDocuments));
}

}  // namespace r2::tokenizer
