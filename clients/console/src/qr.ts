// Draws a QR code on a canvas, in the browser: the code (key material of the device being
// paired) never leaves the page as an image request.
import { encode } from "uqr";

export function drawQr(canvas: HTMLCanvasElement, text: string, pixelsPerModule = 6): void {
  const qr = encode(text, { ecc: "L", border: 4 });
  const size = qr.data.length;
  canvas.width = size * pixelsPerModule;
  canvas.height = size * pixelsPerModule;
  const context = canvas.getContext("2d");
  if (!context) return;
  context.fillStyle = "#ffffff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = "#000000";
  qr.data.forEach((row, y) =>
    row.forEach((dark, x) => {
      if (dark) context.fillRect(x * pixelsPerModule, y * pixelsPerModule, pixelsPerModule, pixelsPerModule);
    }),
  );
}
