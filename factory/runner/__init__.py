"""The async build runner: slots flow through every stage at once; results commit in slot order."""
