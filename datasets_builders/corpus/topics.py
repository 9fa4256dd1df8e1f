"""What the teachers are asked to write for the synthetic part of the corpus: Cosmopedia-style requests, each a
topic, a subtopic and a style."""

from __future__ import annotations

import random

from datasets_builders.teacher_base import TeacherPrompt
from datasets_builders.teacher_shards import TeacherRequest

TOPICS_VERSION = "v1"  # bump when TOPICS or STYLES change: it is part of the shard fingerprint
TOPICS = {
    "arithmetic": [
        "adding and subtracting money",
        "multiplying and dividing",
        "fractions of a whole",
        "percentages in a shop sale",
        "measuring time and distance",
        "sharing things equally",
    ],
    "science": [
        "the water cycle",
        "how plants make food",
        "magnets",
        "states of matter",
        "the solar system",
        "why the sky is blue",
    ],
    "health and the body": [
        "the heart and blood",
        "sleep",
        "germs and washing hands",
        "bones and muscles",
        "healthy food",
        "how vaccines work",
    ],
    "geography": ["rivers", "deserts", "volcanoes", "maps and compasses", "weather and climate", "oceans"],
    "history": [
        "the invention of writing",
        "the printing press",
        "ancient Egypt",
        "the first airplanes",
        "the history of money",
        "Roman roads",
    ],
    "everyday reasoning": [
        "planning a trip",
        "cooking for guests",
        "saving pocket money",
        "catching a bus on time",
        "sharing chores at home",
        "comparing prices",
    ],
    "computing": [
        "what an algorithm is",
        "how computers store numbers",
        "how the internet sends messages",
        "sorting a list",
        "variables in programming",
        "batteries and electricity",
    ],
}
# style -> (instruction for chat teachers, opening for base teachers); {subtopic} and {topic} are filled in
STYLES = {
    "textbook": (
        "Write a short textbook section for middle-school students about {subtopic} ({topic}).",
        "Textbook section for middle-school students ({topic}): {subtopic}\n\n",
    ),
    "story": (
        "Write a short story for children in which a character learns about {subtopic}.",
        "A short story for children about {subtopic}.\n\n",
    ),
    "explanation": (
        "Explain {subtopic} step by step, with one worked example.",
        "{subtopic}, explained step by step with a worked example ({topic}).\n\n",
    ),
    "questions": (
        "Write three questions a student might ask about {subtopic}, each followed by a clear answer.",
        "Three questions and answers about {subtopic} ({topic}).\n\nQ:",
    ),
}
MAX_REQUESTS = sum(len(subtopics) for subtopics in TOPICS.values()) * len(STYLES)


def synthetic_requests(count: int, seed: int) -> list[TeacherRequest]:
    """``count`` (topic, subtopic, style) requests, cycling through the topics so each gets its share."""
    rng = random.Random(seed)
    by_topic = []
    for topic, subtopics in TOPICS.items():
        combos = [(topic, s, style) for s in subtopics for style in STYLES]
        rng.shuffle(combos)
        by_topic.append(combos)
    order = [combo for round_ in zip(*by_topic, strict=True) for combo in round_]
    requests = []
    for topic, subtopic, style in order[:count]:
        instruction, opening = STYLES[style]
        prompt = TeacherPrompt(
            messages=[{"role": "user", "content": instruction.format(topic=topic, subtopic=subtopic)}],
            text=opening.format(topic=topic, subtopic=subtopic),
        )
        request_id = f"{topic.replace(' ', '_')}-{TOPICS[topic].index(subtopic)}-{style}"
        requests.append(TeacherRequest(request_id, prompt, {"topic": topic, "style": style}))
    return requests
