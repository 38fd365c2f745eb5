// The console's only script of its own: copy buttons (data-copy = the id of the field to copy).
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const status = document.getElementById("copy-status");
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    if (status) status.textContent = "Copied.";
  } catch (e) {
    if (status) status.textContent = "Select the text and copy it (Ctrl+C).";
  }
});
