"""The hardware room: device profiles, the cost model (BOPs, flash, SRAM, latency) and budgets."""
