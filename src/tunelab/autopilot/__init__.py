"""`tunelab autopilot`: toward a goal (target, budget, knobs) by plan, approval, then one experiment at
a time: goal.py reads the goal, planner.py picks the next experiment (plan, diagnosis, search),
loop.py runs steps with a train function the recipe hands in, state.py keeps the folder, summary.py
writes the outcome."""
