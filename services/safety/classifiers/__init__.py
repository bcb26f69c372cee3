"""Classifier backends behind one interface (base.Classifier); `build_classifier` picks one."""
