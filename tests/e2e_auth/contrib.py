"""contrib/pipeline-auth.toml with its placeholder key paths replaced by generated keys.

The example names keys under /etc/rohrpost/keys, which do not exist on a test machine, and
``dkim-sign``/``arc-seal`` read their keys when the pipeline is built (``config check``
included). ``contrib_with_keys`` writes a copy whose key paths point at fresh keys of the
right type (Ed25519 when the selector starts with ``ed``, else RSA-2048), and returns the
copy and the DNS TXT records to publish for them.
"""

from __future__ import annotations

import re
from pathlib import Path

from rohrpost.filters import _dkim_adapter as adapter

from rohrpost.cli.dkimcmd import _rsa_pem

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib" / "pipeline-auth.toml"
_KEY = re.compile(r'^(key\s*=\s*")(/etc/rohrpost/keys/([^"/]+)\.([^".]+)\.pem)(")', re.M)


def contrib_with_keys(folder: Path, text: str | None = None) -> tuple[Path, dict[str, str]]:
    """Write ``folder/pipeline-auth.toml`` with real keys; return it and {record name: TXT}."""
    text = CONTRIB.read_text() if text is None else text
    keys = folder / "keys"
    keys.mkdir(exist_ok=True)
    records: dict[str, str] = {}

    def swap(match: re.Match[str]) -> str:
        domain, selector = match.group(3), match.group(4)
        path = keys / f"{domain}.{selector}.pem"
        if not path.exists():
            pem = adapter.generate_ed25519() if selector.startswith("ed") else _rsa_pem(2048)
            path.write_bytes(pem)
            path.chmod(0o600)
            records[f"{selector}._domainkey.{domain}"] = adapter.key_record(
                adapter.load_private_key(pem))
        return f"{match.group(1)}{path}{match.group(5)}"

    out = folder / "pipeline-auth.toml"
    out.write_text(_KEY.sub(swap, text))
    return out, records
