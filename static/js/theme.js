// The sidebar's theme toggle. The choice is a cookie the server reads
// (elastickv_admin/context.py) to write <html data-theme> into every page, so a page is
// painted in the chosen theme from its first frame; without a choice the stylesheet
// follows prefers-color-scheme. A classic deferred script: no inline script under the CSP.
(() => {
  const COOKIE = document.currentScript.dataset.cookie;
  const YEAR_S = 365 * 86400;
  const root = document.documentElement;
  const systemDark = matchMedia("(prefers-color-scheme: dark)");
  const isDark = () => (root.dataset.theme ? root.dataset.theme === "dark" : systemDark.matches);

  function start() {
    const button = document.getElementById("theme-toggle");
    if (!button) return;
    const show = () => button.setAttribute("aria-pressed", String(isDark()));
    button.hidden = false;
    show();
    button.addEventListener("click", () => {
      const theme = isDark() ? "light" : "dark";
      root.dataset.theme = theme;
      const secure = location.protocol === "https:" ? "; Secure" : "";
      document.cookie = `${COOKIE}=${theme}; Path=/; Max-Age=${YEAR_S}; SameSite=Lax${secure}`;
      show();
      // Canvases (the Key Visualizer) read their colours from CSS variables: redraw.
      document.dispatchEvent(new CustomEvent("themechange", { detail: { theme } }));
    });
    systemDark.addEventListener("change", show);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
