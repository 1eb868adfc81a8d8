// Two people edit one document in /editor, each in a Chromium context of
// their own (Debian's /usr/bin/chromium, driven by playwright-core from
// tests/browser/node_modules): both type, each sees the other's text, the
// other's cursor with their name (y-codemirror.next's .cm-ySelectionInfo)
// and the other in the list of people; the status says Connected.
//
//   node editor.mjs BASE DOC [--screenshot FILE.png]
//
// Prints one JSON line; exits 0 when ok.
import { createRequire } from 'node:module'

const require = createRequire(new URL('../browser/package.json', import.meta.url))
const { chromium } = require('playwright-core')

const WAIT_MS = 15000
const LIMIT_MS = 60000
const [base, doc, ...rest] = process.argv.slice(2)
const screenshot = rest[0] === '--screenshot' ? rest[1] : null

async function main (browser, errors) {
  const open = async (name) => {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } })
    const page = await context.newPage()
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') errors.push(`${name}: ${m.text()}`) })
    page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`))
    await page.goto(`${base.replace(/\/$/, '')}/editor?doc=${encodeURIComponent(doc)}&name=${name}`)
    await page.waitForSelector('#status[data-sync="synced"]', { timeout: WAIT_MS })
    return page
  }
  const ann = await open('Ann')
  const bob = await open('Bob')
  await ann.click('.cm-content')
  await ann.keyboard.type('Hello from Ann.\n', { delay: 15 })
  await bob.click('.cm-content')
  await bob.keyboard.press('Control+End')
  await bob.keyboard.type('Bob was here.', { delay: 15 })
  // Ann types more while Bob's edits arrive.
  await ann.keyboard.type(' And more.', { delay: 15 })
  const both = (text) => text.includes('Hello from Ann.') && text.includes('Bob was here.') && text.includes('And more.')
  const textOf = (page) => page.evaluate(() => window.duplexEditor.ytext.toString())
  for (const page of [ann, bob]) {
    await page.waitForFunction(() => {
      const t = window.duplexEditor.ytext.toString()
      return t.includes('Hello from Ann.') && t.includes('Bob was here.') && t.includes('And more.')
    }, null, { timeout: WAIT_MS })
  }
  // The remote cursor, with the other's name, in each editor.
  await ann.waitForFunction(() => [...document.querySelectorAll('.cm-ySelectionInfo')].some((e) => e.textContent === 'Bob'), null, { timeout: WAIT_MS })
  await bob.waitForFunction(() => [...document.querySelectorAll('.cm-ySelectionInfo')].some((e) => e.textContent === 'Ann'), null, { timeout: WAIT_MS })
  const report = {}
  for (const [name, page] of [['ann', ann], ['bob', bob]]) {
    report[name] = {
      text: await textOf(page),
      shown: await page.evaluate(() => window.duplexEditor.view.state.doc.toString()),
      cursors: await page.$$eval('.cm-ySelectionInfo', (els) => els.map((e) => e.textContent)),
      people: await page.$$eval('#users .user', (els) => els.map((e) => e.textContent)),
      status: await page.textContent('#status-text')
    }
  }
  if (screenshot) await ann.screenshot({ path: screenshot, fullPage: true })
  report.converged = report.ann.text === report.bob.text && both(report.ann.text)
  return report
}

const errors = []
const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, reason: `timed out after ${LIMIT_MS} ms`, errors }))
  process.exit(1)
}, LIMIT_MS)
let browser
let report = {}
try {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: WAIT_MS,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync']
  })
  report = await main(browser, errors)
} catch (e) {
  report.reason = `${e.name}: ${e.message}`
} finally {
  clearTimeout(watchdog)
  if (browser) await browser.close().catch(() => {})
}
const ok = !report.reason && report.converged === true
console.log(JSON.stringify({ ok, ...report, errors }))
process.exit(ok ? 0 : 1)
