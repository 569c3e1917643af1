"""The lab's reports: Markdown tables, timing, plots and the pages under results/."""
