"""Build src/dmnn/data/imagenet_categories.json: ImageNet's 1000 classes in 58 coarse categories.

DMNN (§3.2) supervises its controllers with "58 big categories" cut from ImageNet's WordNet
hierarchy, without saying where the cut is. This script makes one cut, reproducibly, from
WordNet 3.0 (Debian's ``wordnet-base``: /usr/share/wordnet/data.noun) and the 1000 ILSVRC-2012
WordNet ids (a ``LOC_synset_mapping.txt``-style file, "nXXXXXXXX name" per line, or a train
folder whose subfolders are the ids):

1. Every class's path to the root ``entity`` follows its *first* hypernym pointer at each step
   (WordNet allows several; the first makes the hierarchy a tree).
2. Start with one group, the root, holding all 1000 classes. Repeatedly split the largest group
   into its children on those paths (only children holding classes count), skipping a split that
   would pass the target count, until there are 58 groups or no split fits.
3. A category is named after its WordNet synset (first lemma) and keeps its id.

    apt-get install wordnet-base
    python scripts/imagenet_categories.py SYNSETS.txt            # writes the JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

WORDNET = Path("/usr/share/wordnet/data.noun")
OUT = Path(__file__).parents[1] / "src" / "dmnn" / "data" / "imagenet_categories.json"
TARGET = 58


def read_wordnet(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(first hypernym, first lemma) of every noun synset, keyed by 'n' + offset."""
    parent, lemma = {}, {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):  # licence header
            continue
        fields = line.split(" | ")[0].split()
        offset, n_words = fields[0], int(fields[3], 16)
        wid = f"n{offset}"
        lemma[wid] = fields[4]
        pos = 4 + 2 * n_words
        for i in range(int(fields[pos])):
            symbol, target = fields[pos + 1 + 4 * i], fields[pos + 2 + 4 * i]
            if symbol in ("@", "@i"):
                parent[wid] = f"n{target}"
                break
    return parent, lemma


def read_classes(source: Path) -> list[str]:
    if source.is_dir():
        return sorted(p.name for p in source.iterdir() if p.is_dir())
    return [line.split()[0] for line in source.read_text().splitlines() if line.strip()]


def cut(classes: list[str], parent: dict[str, str], target: int) -> dict[str, str]:
    """class id → the id of its group's synset."""
    paths = {}
    for c in classes:
        path = [c]
        while path[-1] in parent:
            path.append(parent[path[-1]])
        paths[c] = path[::-1]  # root first
    depth = dict.fromkeys(classes, 0)  # each class's group: paths[c][depth[c]]
    while True:
        groups: dict[str, list[str]] = {}
        for c in classes:
            groups.setdefault(paths[c][depth[c]], []).append(c)
        if len(groups) >= target:
            break
        best = None
        for _, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            children = {paths[c][depth[c] + 1] for c in members if depth[c] + 1 < len(paths[c])}
            if len(members) > 1 and len(groups) - 1 + len(children) <= target:
                best = members
                break
        if best is None:
            break
        for c in best:
            depth[c] = min(depth[c] + 1, len(paths[c]) - 1)
        # a chain of single children (entity → physical entity → …) splits nothing: go on
    return {c: paths[c][depth[c]] for c in classes}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    classes = read_classes(Path(sys.argv[1]))
    if len(classes) != 1000:
        sys.exit(f"expected the 1000 ILSVRC-2012 ids, found {len(classes)}")
    parent, lemma = read_wordnet(WORDNET)
    missing = [c for c in classes if c not in lemma]
    if missing:
        sys.exit(f"{len(missing)} ids are not WordNet 3.0 noun synsets, e.g. {missing[0]}")
    group_of = cut(classes, parent, TARGET)
    synsets = sorted(set(group_of.values()), key=lambda s: (-list(group_of.values()).count(s), s))
    names = [f"{lemma[s]} ({s})" for s in synsets]
    index = {s: i for i, s in enumerate(synsets)}
    data = {
        "about": ("ImageNet (ILSVRC-2012) classes in coarse categories for DMNN's category loss "
                  "(paper §3.2), cut from WordNet 3.0 (Debian wordnet-base) by "
                  "scripts/imagenet_categories.py: first-hypernym tree, largest group split "
                  f"first, {TARGET} groups."),
        "names": names,
        "class_to_category": [index[group_of[c]] for c in classes],
        "class_names": classes,
    }
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    sizes = [list(group_of.values()).count(s) for s in synsets]
    print(f"{len(synsets)} categories, sizes {max(sizes)}..{min(sizes)}; wrote {OUT}")


if __name__ == "__main__":
    main()
