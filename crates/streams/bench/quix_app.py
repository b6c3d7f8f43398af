"""The Quix Streams side of the throughput comparison: the same word count (and stateless map)
as the sluice-streams examples, against the same broker.

usage: quix_app.py word_count|map BOOTSTRAP INPUT OUTPUT GROUP GUARANTEE STATE_DIR COMMIT_INTERVAL_S
"""

import re
import sys

from quixstreams import Application


def main():
    kind, bootstrap, input_topic, output_topic, group, guarantee, state_dir, commit_s = sys.argv[1:9]
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee=guarantee,
        state_dir=state_dir,
        commit_interval=float(commit_s),
    )
    inp = app.topic(input_topic, value_deserializer="str")
    out = app.topic(output_topic, key_serializer="str", value_serializer="str")
    sdf = app.dataframe(inp)
    if kind == "word_count":
        split = re.compile(r"[^0-9A-Za-z]+")
        sdf = sdf.apply(lambda line: [w.lower() for w in split.split(line) if w], expand=True)
        sdf = sdf.group_by(lambda word: word, name="word")

        def count(_word, state):
            n = state.get("count", 0) + 1
            state.set("count", n)
            return str(n)

        sdf = sdf.apply(count, stateful=True)
    else:
        sdf = sdf.apply(lambda line: line.upper())
    sdf.to_topic(out)
    print("running", flush=True)
    app.run()


if __name__ == "__main__":
    main()
