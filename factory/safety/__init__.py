"""Safety datasets (BeaverTails, WildGuardMix, ToxicChat, Aegis 2.0) in policy-compliance form."""
