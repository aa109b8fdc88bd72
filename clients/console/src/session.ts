// The API key lives in this tab's sessionStorage only: never a cookie (so no request carries it
// by itself, and there is nothing for a cross-site request to ride on), gone when the tab closes.

const KEY = "zapgate.console.apiKey";

export function savedKey(): string | null {
  return sessionStorage.getItem(KEY);
}

export function saveKey(key: string): void {
  sessionStorage.setItem(KEY, key);
}

export function forgetKey(): void {
  sessionStorage.removeItem(KEY);
}
