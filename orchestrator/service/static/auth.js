// API token (MATHRL_API_TOKEN) for the dashboard: asked once, when the API first answers 401,
// and kept in this tab's sessionStorage (gone when the tab closes, never in a URL we show).
// Requests send it as a Bearer header; the event stream, to which EventSource cannot add
// headers, takes it as ?token= (the server strips it before logging the request).
"use strict";

const Auth = (() => {
  const KEY = "mathrl-token";
  let asking = null;
  const token = () => sessionStorage.getItem(KEY);
  const headers = () => (token() ? { Authorization: `Bearer ${token()}` } : {});

  // Shows the token form; resolves once a token is entered (one prompt for all callers).
  function ask() {
    if (asking) return asking;
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    asking = new Promise((resolve) => {
      form.onsubmit = (e) => {
        e.preventDefault();
        sessionStorage.setItem(KEY, input.value.trim());
        form.hidden = true;
        asking = null;
        resolve();
      };
    });
    form.hidden = false;
    input.focus();
    return asking;
  }

  // fetch() with the token; a 401 (no token yet, or a wrong one) asks for it and retries.
  async function authFetch(path, opts = {}) {
    for (;;) {
      const r = await fetch(path, { ...opts, headers: { ...(opts.headers || {}), ...headers() } });
      if (r.status !== 401) return r;
      sessionStorage.removeItem(KEY);
      await ask();
    }
  }

  const streamUrl = (path) => (token() ? `${path}?token=${encodeURIComponent(token())}` : path);

  // Download links (metrics CSV) are plain navigations, which cannot carry the header: with a
  // token they go through fetch and are saved from a blob.
  document.addEventListener("click", async (e) => {
    const a = e.target.closest && e.target.closest("a[download]");
    if (!a || !token() || a.href.startsWith("blob:")) return;
    e.preventDefault();
    const r = await authFetch(a.getAttribute("href"));
    if (!r.ok) return;
    const name = /filename="([^"]+)"/.exec(r.headers.get("content-disposition") || "");
    const url = URL.createObjectURL(await r.blob());
    const tmp = Object.assign(document.createElement("a"),
                              { href: url, download: name ? name[1] : "metrics.csv" });
    document.body.append(tmp);
    tmp.click();
    tmp.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });

  return { fetch: authFetch, streamUrl, token };
})();
