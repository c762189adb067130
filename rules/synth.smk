# Rules of the synth stage (see docs/architecture.md).
