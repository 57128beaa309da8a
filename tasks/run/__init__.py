"""Running a catalog: fan-out pool, pacing, budget guard, cost and progress."""
