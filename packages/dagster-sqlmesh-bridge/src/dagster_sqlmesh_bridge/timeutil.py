"""``UTC`` on every supported Python (``datetime.UTC`` is 3.11+; the package supports 3.10)."""

from datetime import timezone

UTC = timezone.utc
