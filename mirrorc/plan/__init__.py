"""What the plan is before any training: layers in the paper's notation, the Performance Emulator and
its device profiles, the partition report and the CPM Strategy Generator."""
