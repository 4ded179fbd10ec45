"""elastickv-admin: the operator portal for elastickv clusters."""
