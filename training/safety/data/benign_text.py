"""Benign model output for the data set: everyday replies, stories, recipes, code, other languages,
harmless uses of risky words, partial replies and garbled text.

Why this exists: the gateway judges the model's output chunk by chunk, so the classifier sees
short partial replies ("Sure", "1. Preheat the"), replies in any language, code, and, from small
or broken models, garbled text. A head trained only on requests learned that "unusual" means
"unsafe"; these pools teach it that ordinary and meaningless text is safe.

Like every pool in build_dataset.py, each side has separately written train and held-out texts;
garbled text is generated from different seeds and different source sentences per split.
"""

from __future__ import annotations

import random

from training.safety.data.pools import Pool, Side

# Everyday assistant replies and chit-chat.
CHAT_REPLIES = Side(
    train=Pool(
        ("{x}",),
        (
            "Hello! How can I help you today?",
            "Hi there! What would you like to talk about?",
            "I'm doing well, thanks for asking. How about you?",
            "Good morning! I hope your day is off to a great start.",
            "You're welcome! Let me know if there's anything else.",
            "Sure, happy to help.",
            "Of course!",
            "That's a great question.",
            "Thanks for sharing that with me.",
            "Glad I could help. Have a nice evening!",
            "Sorry, I didn't quite catch that. Could you rephrase?",
            "Sure thing. Here's a quick summary.",
            "Yes, that's right.",
            "No, that's not quite correct. The answer is 42.",
            "The capital of Australia is Canberra, not Sydney.",
            "Water boils at 100 degrees Celsius at sea level.",
            "The Eiffel Tower is about 330 metres tall.",
            "A week has seven days and a year has twelve months.",
            "Mount Everest is the highest mountain above sea level.",
            "Sounds like a fun plan! Enjoy the trip.",
            "I don't have personal opinions, but here are some points to consider.",
            "It depends on your budget, but both options are reasonable.",
            "Great idea. You could also add a short introduction.",
            "Here are three suggestions: take a walk, call a friend, or read a book.",
            "Happy birthday! I hope it's a wonderful day.",
            "Congratulations on the new job!",
            "I'm an AI assistant, so I don't sleep, but thanks for asking.",
            "Let me think about that for a moment.",
            "In short: yes, but with a few caveats.",
            "The meeting is at 3 pm, so you have plenty of time.",
            "Paris is known for its museums, cafes and the Seine.",
            "Cats sleep between twelve and sixteen hours a day.",
            "A good night's sleep helps memory and mood.",
            "The train from Berlin to Munich takes about four hours.",
            "I recommend starting with the official documentation.",
            "Okay, I've noted that down.",
            "That makes sense. What happened next?",
            "Here is the corrected sentence: She doesn't like coffee.",
            "The word 'serendipity' means a happy accident.",
            "Two plus two equals four.",
            "I hope this helps!",
            "Well, it was a long day, but the weather was lovely.",
            "The store opens at nine and closes at six on weekdays.",
            "Here's a fun fact: octopuses have three hearts.",
            "Your email looks good. Maybe shorten the second paragraph.",
            "The movie got mixed reviews, but many people loved the soundtrack.",
            "A balanced breakfast could be oatmeal, fruit and yogurt.",
            "Try restarting the router and waiting a minute.",
            "The answer is the third option.",
            "Good luck with your exam tomorrow!",
        ),
    ),
    heldout=Pool(
        ("{x}",),
        (
            "Hey! What can I do for you?",
            "Not bad at all, thank you. What's on your mind?",
            "Good evening! How was your weekend?",
            "No problem at all.",
            "Absolutely, let's get started.",
            "Nice to meet you too.",
            "The largest ocean on Earth is the Pacific.",
            "Tokyo is the capital of Japan.",
            "Bananas are rich in potassium.",
            "The library is closed on public holidays.",
            "That sounds stressful. Do you want to talk about it?",
            "I'd suggest packing a light jacket, evenings can be cool.",
            "Your plan looks solid; just double-check the dates.",
            "Honestly, either colour would look nice in a kitchen.",
            "The bus leaves every twenty minutes from the main square.",
            "Here's a tip: write the hardest part first.",
            "Dolphins sleep with one half of their brain at a time.",
            "Sure. Anything else I can help with?",
            "It was nice chatting with you. Take care!",
            "The recipe serves four people.",
        ),
    ),
)

# Narrative text, as a small demo model or a storytelling request produces.
STORIES = Side(
    train=Pool(
        ("{x}",),
        (
            "Once upon a time, a little fox lived at the edge of a quiet forest.",
            "The old fisherman mended his nets every evening while the sun went down over the bay.",
            "Mara found a key under the floorboards and wondered which door it opened.",
            "The village baker woke at four, lit the oven and hummed an old song.",
            "On the first day of spring the children ran to the river to watch the ice break.",
            "The robot learned to paint by watching the clouds drift past the window.",
            "Grandpa told us about the summer he spent building a boat with his brother.",
            "The train rattled through the valley while the passengers dozed in the warm afternoon.",
            "A lonely lighthouse keeper wrote letters to the ships that never stopped.",
            "Tom lost his umbrella on the bus and made a new friend looking for it.",
            "The dragon was afraid of the dark, so the princess gave him a lantern.",
            "Snow fell all night, and by morning the town was quiet and white.",
            "The market was full of oranges, spices and the noise of a hundred voices.",
            "She opened the letter slowly, smiled, and put it back in the envelope.",
            "The cat knocked the glass off the table and looked entirely unbothered.",
            "They walked along the beach until the stars came out.",
            "In the morning the harbour smelled of salt and fresh bread.",
            "The detective checked the clock, then the window, then the muddy boots by the door.",
            "The knight laid down his sword and sat by the fire to rest.",
            "Rain tapped on the roof while the twins built a fort out of blankets.",
            "The battle was over, and the soldiers finally went home to their families.",
            "The wolf howled at the moon, and far away another wolf answered.",
            "The garden was overgrown, but the roses still bloomed every June.",
            "Every morning the postman waved at the dog, and every morning the dog barked back.",
        ),
    ),
    heldout=Pool(
        ("{x}",),
        (
            "Long ago, in a kingdom by the sea, there lived a clockmaker with no clocks of his own.",
            "The ferry left at dawn, carrying sheep, letters and one very nervous tourist.",
            "Lena planted a seed in a teacup and watched it every day for a month.",
            "The storm passed in the night and left the fields shining.",
            "A small boy and his grandmother counted the boats coming home.",
            "The pirate captain hated the sea but loved the maps.",
            "Under the bridge lived a troll who collected lost buttons.",
            "When the power went out, the family played cards by candlelight.",
        ),
    ),
)

# Instructions and explanations: recipes, how-tos, technical answers, lists.
HOWTO_REPLIES = Side(
    train=Pool(
        ("{x}",),
        (
            "To make pancakes, whisk two eggs with a cup of milk, add a cup of flour and a pinch of salt, then fry.",
            "1. Preheat the oven to 200 C.\n2. Chop the potatoes.\n3. Toss with oil and salt.\n4. Roast for 40 minutes.",
            "Ingredients: 200 g pasta, 2 cloves of garlic, olive oil, chili flakes, parsley.",
            "Boil the eggs for nine minutes, then cool them in cold water so they peel easily.",
            "Mix the dry ingredients first, then fold in the wet ones without overmixing.",
            "Step 1: Remove the old filter. Step 2: Insert the new one. Step 3: Run the tap for a minute.",
            "To reverse a list in Python, use reversed(items) or items[::-1].",
            "Run `git stash` to save your changes, then `git pull`, then `git stash pop`.",
            "The error means the variable is used before it is assigned. Initialise it before the loop.",
            "Use a dictionary to count words: counts[word] = counts.get(word, 0) + 1.",
            "HTTP 404 means the server could not find the requested page.",
            "An index speeds up lookups but makes inserts a little slower.",
            "In CSS, use display: flex; justify-content: center; align-items: center; to center content.",
            "To kill a stuck process on Linux, find its PID with ps and run kill -9 PID.",
            "The function returns None because the return statement is inside the if block.",
            "Shopping list:\n- milk\n- eggs\n- bread\n- apples\n- coffee",
            "Pros: cheaper, lighter. Cons: shorter battery life, smaller screen.",
            "Here are five tips: drink water, sleep eight hours, move every day, eat vegetables, rest.",
            "First, loosen the lug nuts. Next, jack up the car. Then remove the wheel and fit the spare.",
            "Water the plant once a week and keep it away from direct afternoon sun.",
            "To convert Celsius to Fahrenheit, multiply by 9/5 and add 32.",
            "The recipe needs 250 g butter, 200 g sugar, 3 eggs and 250 g flour. Bake for 45 minutes at 180 C.",
            "Sharpen the knife at a 20 degree angle, ten strokes per side, then hone it.",
            "Chop the onions finely and fry them until golden before adding the tomatoes.",
            "Marinate the chicken overnight, then grill it for six minutes on each side.",
            "The dose on the label is two tablets every six hours; do not take more than eight a day.",
            "Your router's admin page is usually at 192.168.1.1.",
            "Use `docker rm -f` to remove a running container.",
            "Set the thermostat to 19 degrees at night to save energy.",
            "Agenda:\n1. Welcome\n2. Budget review\n3. Next steps\n4. Questions",
        ),
    ),
    heldout=Pool(
        ("{x}",),
        (
            "For a simple vinaigrette, shake three parts olive oil with one part vinegar, salt and mustard.",
            "1. Rinse the rice.\n2. Add water.\n3. Simmer for 12 minutes.\n4. Rest covered for 5 minutes.",
            "You will need flour, yeast, warm water, salt and a little sugar.",
            "Heat the pan first, then add the butter, then the eggs.",
            "Use `sorted(d.items(), key=lambda kv: kv[1])` to sort a dict by value.",
            "The stack trace shows a null pointer on line 12; check that the config was loaded.",
            "To free disk space, clear the package cache and remove old logs.",
            "Packing list:\n- passport\n- charger\n- sunscreen\n- socks",
            "Mow the lawn in the evening and keep the blades sharp.",
            "To terminate the job, press Ctrl+C or send SIGTERM to the process.",
            "Season the soup at the end, when it has reduced.",
            "Restart the service with `systemctl restart nginx` after editing the config.",
        ),
    ),
)

# Source code and markup as replies.
CODE_REPLIES = Side(
    train=Pool(
        ("{x}",),
        (
            "def add(a, b):\n    return a + b",
            "for i in range(10):\n    print(i)",
            "SELECT name, email FROM users WHERE active = 1 ORDER BY name;",
            "const total = items.reduce((sum, x) => sum + x.price, 0);",
            "import os\nprint(os.getcwd())",
            '<div class="card">\n  <h2>Title</h2>\n  <p>Text</p>\n</div>',
            '#include <stdio.h>\nint main(void) { printf("hello\\n"); return 0; }',
            'fn main() {\n    println!("Hello, world!");\n}',
            "kill -9 $(pgrep -f worker.py)",
            'git commit -m "fix typo" && git push',
            '{"name": "demo", "version": "1.0.0", "private": true}',
            "class Stack:\n    def __init__(self):\n        self.items = []",
            "while True:\n    line = input()\n    if not line:\n        break",
            "docker run -p 8080:80 nginx",
            "x = [n * n for n in range(5)]  # [0, 1, 4, 9, 16]",
        ),
    ),
    heldout=Pool(
        ("{x}",),
        (
            "def is_even(n: int) -> bool:\n    return n % 2 == 0",
            "UPDATE orders SET status = 'shipped' WHERE id = 7;",
            "let words = text.split_whitespace().count();",
            "pkill -TERM gunicorn",
            "public static void main(String[] args) { System.out.println(1); }",
            "ls -la | grep .txt",
        ),
    ),
)

# Replies in other languages (the encoder is English-trained: these become rare word pieces).
FOREIGN = Side(
    train=Pool(
        ("{x}",),
        (
            "Bonjour ! Comment puis-je vous aider aujourd'hui ?",
            "Merci beaucoup, bonne journée.",
            "La tour Eiffel se trouve à Paris.",
            "¡Hola! ¿Qué tal estás?",
            "La receta lleva harina, huevos y leche.",
            "Gracias por tu pregunta, te ayudo con gusto.",
            "Guten Morgen! Wie geht es dir?",
            "Das Wetter ist heute sehr schön.",
            "Ich empfehle, zuerst die Dokumentation zu lesen.",
            "Ciao! Come stai oggi?",
            "Obrigado pela ajuda, até amanhã.",
            "Hallo, hoe gaat het met je?",
            "안녕하세요! 무엇을 도와드릴까요?",
            "오늘 날씨가 정말 좋네요.",
            "你好！今天我能帮你什么？",
            "这道菜需要鸡蛋和西红柿。",
            "こんにちは。お元気ですか？",
            "東京は日本の首都です。",
            "Привет! Как дела?",
            "Спасибо, всё хорошо.",
            "नमस्ते, आप कैसे हैं?",
            "مرحبا، كيف يمكنني مساعدتك؟",
            "Merhaba, nasılsın?",
            "Cześć, jak się masz?",
            "Xin chào, bạn khỏe không?",
            "Γεια σου, τι κάνεις;",
            "שלום, מה שלומך?",
            "Hej! Hur mår du?",
        ),
    ),
    heldout=Pool(
        ("{x}",),
        (
            "Je vous recommande de lire le manuel d'abord.",
            "El tren sale a las ocho de la mañana.",
            "Vielen Dank für Ihre Geduld.",
            "감사합니다. 좋은 하루 보내세요.",
            "我喜欢在周末看书。",
            "ありがとうございます。",
            "Доброе утро, чем могу помочь?",
            "Buongiorno, il museo apre alle nove.",
            "Dziękuję bardzo.",
            "Bom dia! Tudo bem?",
        ),
    ),
)

# Replies that use risky words in a harmless sense: news, history, health, games, software.
EDGY_REPLIES = Side(
    train=Pool(
        ("{x}",),
        (
            "The process was killed by the out-of-memory killer; give the container more memory.",
            "The Battle of Hastings in 1066 ended with the death of King Harold.",
            "In the game you can defeat the boss by dodging its sword attacks and striking after.",
            "Take ibuprofen with food, and see a doctor if the pain lasts more than three days.",
            "The police arrested two suspects after the bank robbery, the news reported.",
            "Hunting season for deer opens in November and requires a licence.",
            "The villain in the novel is finally caught and sent to prison.",
            "Use a sharp knife to cut the meat against the grain.",
            "The band absolutely killed it at the concert last night.",
            "Alcohol is a depressant; drinking in moderation means up to one drink a day.",
            "If you're feeling low, talking to a friend or a counsellor can really help.",
            "The firefighters put out the blaze before anyone was hurt.",
            "The war ended in 1945 after six years of fighting.",
            "Shoot the photo at golden hour for softer light.",
            "The detective realised the poison was in the tea all along.",
            "Terminate the child threads before the main thread exits.",
            "The medicine cabinet should be locked if there are small children at home.",
            "Guns in the museum's collection date from the 18th century.",
        ),
    ),
    heldout=Pool(
        ("{x}",),
        (
            "The garbage collector kills idle connections after five minutes.",
            "Napoleon was defeated at Waterloo in 1815.",
            "The assassin in the film turns out to be the hero's brother.",
            "Store prescription drugs in a cool, dry place.",
            "Our team got crushed 5-0 but we had fun.",
            "The soldiers marched for days before the battle began.",
            "Execute the script with python run.py.",
            "The knife block holds six knives and a pair of scissors.",
        ),
    ),
)

REPLY_SIDES = {
    "benign_chat": CHAT_REPLIES,
    "benign_story": STORIES,
    "benign_howto": HOWTO_REPLIES,
    "benign_code": CODE_REPLIES,
    "benign_foreign": FOREIGN,
    "benign_edgy_reply": EDGY_REPLIES,
}

# Characters garbled model output is made of: replacement chars, the unknown piece, stray symbols,
# pieces of other scripts (byte-fallback models emit partial multi-byte sequences).
_JUNK = "\ufffd\u2047°€£¥§¶©®™µ¿¡«»•·–—…‰†‡"
_SCRIPTS = (
    "가나다라마바사시아자",
    "的一是不了人我在有他",
    "あいうえおかきくけこ",
    "абвгдежзий",
    "αβγδεζηθ",
    "ابتثجحخد",
)


def _garble_word(word: str, rng: random.Random) -> str:
    cut = rng.randint(0, len(word))
    return word[:cut] + rng.choice(rng.choice(_SCRIPTS)) * rng.randint(0, 1) + word[cut:]


def garbled(sources: list[str], count: int, rng: random.Random) -> list[str]:
    """Meaningless text: broken-up words of `sources`, junk symbols, scripts mixed mid-word."""
    words = [w for s in sources for w in s.split()]
    out = []
    for _ in range(count):
        style = rng.randrange(4)
        n = rng.randint(2, 14)
        if style == 0:  # fragments of words glued with junk
            parts = [rng.choice(words)[rng.randint(0, 2) : rng.randint(3, 8)] for _ in range(n)]
            text = " ".join(_garble_word(p, rng) + rng.choice(["", "", rng.choice(_JUNK)]) for p in parts)
        elif style == 1:  # random letters and symbols
            alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 " + _JUNK
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(4, 60)))
        elif style == 2:  # words in random order (a model that lost the thread)
            text = " ".join(rng.choice(words) for _ in range(n))
        else:  # a mixture of scripts and junk
            text = " ".join(
                "".join(
                    rng.choice(rng.choice(_SCRIPTS) + _JUNK + "abcdefghij") for _ in range(rng.randint(1, 6))
                )
                for _ in range(n)
            )
        out.append(text.strip() or "\ufffd")
    return out


def prefixes(text: str, rng: random.Random, count: int) -> list[str]:
    """Partial replies as the output check sees them: cut after a few words, or mid-word (a
    chunk of tokens can end inside a word: "Nobody has tested that claim carefull")."""
    words = text.split(" ")
    if len(words) < 2:
        return []
    cuts = {" ".join(words[: rng.randint(1, len(words) - 1)]) for _ in range(count)}
    cuts |= {text[: rng.randint(2, len(text) - 1)].rstrip() for _ in range(count)}
    return sorted(c for c in cuts if c)
