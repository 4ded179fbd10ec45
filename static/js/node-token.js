// Settings -> Node token: the copy button of the one-time token display.
// A file, not an inline script: the CSP allows scripts from 'self' only.
"use strict";

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain-HTTP development: select the text and use the legacy copy command.
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("copy refused");
}

function enableCopyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const source = document.querySelector(button.dataset.copy);
    if (!source) continue;
    const label = button.textContent;
    button.hidden = false; // without JavaScript the token is still there to select
    button.addEventListener("click", async () => {
      try {
        await copyText(source.textContent.trim());
        button.textContent = "Copied";
        button.classList.add("copied");
      } catch (err) {
        button.textContent = "Copy failed: select the token and copy it";
      }
      window.setTimeout(() => {
        button.textContent = label;
        button.classList.remove("copied");
      }, 2500);
    });
  }
}

enableCopyButtons();
