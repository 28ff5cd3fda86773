"""Piloting from chat: notices of proposals, reminders, expiries and runs' ends sent to Slack,
Telegram and signed webhooks (the notifier), and decisions and commands taken back from there
through the same checks as the HTTP API.

- settings.py: the ``channels:`` section of the server's settings (destinations, routes);
- notices.py: what a notice says; base.py: what a channel is;
- notifier.py: the durable delivery loop; runtime.py: what a server runs for its channels;
- desk.py: decisions and commands from a chat user, as their Qapten identity;
- webhook.py, slack.py, telegram.py: the channels; slack_routes.py and telegram_updates.py:
  what Slack and Telegram send back (clicks, forms, commands, updates).

This package's modules are imported on use: a server with no channel loads none of them.
"""
