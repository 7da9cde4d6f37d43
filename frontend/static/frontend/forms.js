// Small behaviours of plain forms, kept out of inline attributes (the Content-Security-Policy
// allows no inline script): a control marked data-submit-on-change submits its form when changed.
document.addEventListener("change", (event) => {
  const control = event.target;
  if (control instanceof HTMLElement && control.hasAttribute("data-submit-on-change") && control.form) {
    control.form.requestSubmit();
  }
});
