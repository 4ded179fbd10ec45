"""Key Visualizer: matrix fetch, merge, budgets, live stream and the heatmap."""
