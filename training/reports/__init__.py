"""The lab's reports: Markdown tables, plots and the pages under results/."""
