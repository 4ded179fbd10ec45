"""The demo's own parts (`elastickv-admin demo` only): synthetic history, failure controls
(the Demo card and demo-ctl) and the banner. `serve` never loads any of it."""
