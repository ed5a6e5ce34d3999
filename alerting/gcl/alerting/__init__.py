"""Alerting on gcl events: rules from TOML, evaluated on the event stream, sent to actions.

    gcl alert --rules alerts.toml

`rules` loads and checks the file, `evaluator` turns events into firing/resolved alerts,
`actions` delivers them (log, command, webhook), `runner` ties them to NATS.
"""

from gcl.alerting.alert import Alert
from gcl.alerting.rules import RuleFile, RulesError, load_rules, parse_rules

__all__ = ["Alert", "RuleFile", "RulesError", "load_rules", "parse_rules"]
