// Page-wide helpers the views share: the confirm step and short notices.

/** Ask before acting: resolves true when the user confirmed in the dialog. */
export function confirmAction(title, text, okLabel, dangerous = true) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const ok = document.getElementById("confirm-ok");
  ok.textContent = okLabel;
  ok.className = dangerous ? "danger" : "primary";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
  });
}

let notices = null;

/** A short notice at the bottom of the page (announced to screen readers), gone after a few seconds. */
export function notify(text, bad = false) {
  if (!notices) {
    notices = document.createElement("div");
    notices.className = "notices";
    notices.setAttribute("role", "status");
    notices.setAttribute("aria-live", "polite");
    document.body.append(notices);
  }
  const item = document.createElement("p");
  item.className = bad ? "notice bad" : "notice";
  item.textContent = text;
  notices.append(item);
  setTimeout(() => item.remove(), bad ? 8000 : 4000);
}
