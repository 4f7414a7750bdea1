"""Pure business rules: states, the purchase machine, withdrawal rules, money maths.
No SQL, no HTTP, no clock: values in, decisions out."""
