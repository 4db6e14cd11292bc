"""Write (or rewrite) the model card of a converted repo.

    python model_cards/generate_card.py REPO_DIR --repo-id ORG/NAME [--kind lavit|gvt] [--base-model ID] [--license ID]

Reads `REPO_DIR/conversion_provenance.json` (written by the conversion scripts) for the provenance section, builds
the card with `gvt.model_cards.build_model_card`, validates its metadata offline and saves `REPO_DIR/README.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gvt.model_cards import build_model_card, save_model_card, validate_model_card


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo_dir")
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--kind", choices=["lavit", "gvt"], default=None, help="default: from the provenance file")
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--license", default=None)
    args = parser.parse_args(argv)
    repo = Path(args.repo_dir)
    if not repo.is_dir():
        print(f"error: no repo folder at {repo}", file=sys.stderr)
        return 1
    provenance = repo / "conversion_provenance.json"
    try:
        summary = json.loads(provenance.read_text()) if provenance.is_file() else None
    except ValueError as error:
        print(f"error: {provenance} is not valid JSON: {error}", file=sys.stderr)
        return 1
    kind = args.kind or (summary or {}).get("kind") or "lavit"
    card = build_model_card(
        repo_id=args.repo_id, kind=kind, summary=summary, base_model=args.base_model, license=args.license
    )
    try:
        validate_model_card(card)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    save_model_card(card, repo / "README.md")
    print(f"wrote {repo / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
