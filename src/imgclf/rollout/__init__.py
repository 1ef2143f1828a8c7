"""Putting versions in front of traffic and taking them back: stage, gate, publish, rollback, pin,
status, and the drill that proves none of it drops a request."""
