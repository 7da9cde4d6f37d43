"""The browser pages. Views validate input, call one service or selector, and render."""
