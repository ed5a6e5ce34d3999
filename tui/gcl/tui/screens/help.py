"""`?`: every key, in one place, so nobody has to read docs to operate the dashboard."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# gcl dashboard

Live limits from the coordinator. Rows update from its event stream; a resync every few
seconds heals anything missed. **Red rows are saturated** (a queue has formed), dim rows are
inactive limits.

## Main screen

| Key | Does |
| --- | --- |
| `↑` `↓` / mouse | choose a limit |
| `enter` / click | open its detail: holders, waiting queue, recent events |
| `/` | filter by name (`gpu` or a pattern such as `gpu:*`); `escape` leaves the filter |
| `s` | sort by name, occupancy, waiters |
| `k` | which event kinds the log shows |
| `n` | new limit |
| `e` | edit slots and decay |
| `+` / `-` | one slot more / fewer, at once |
| `a` | enable / disable |
| `d` | delete (asks first, says how many slots are held) |
| `p` | pause live updates (they are kept and applied on resume) |
| `ctrl+p` | command palette: every action by name |
| `q` | quit |

## Detail screen

| Key | Does |
| --- | --- |
| `↑` `↓` | choose a holder |
| `r` | revoke the chosen holder's lease (asks first) |
| `e` `+` `-` `a` `d` | as on the main screen, for this limit |
| `escape` | back to the table |

Started with `--read-only`, every key that changes something is switched off.

The indicator at the top says *connected*, *reconnecting* (NATS is gone; it retries by
itself) or *coordinator not answering* (NATS is fine but no `gcl serve` / `gcl up` replies).
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help", classes="dialog"):
            yield Markdown(HELP)
