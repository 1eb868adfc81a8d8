// People editing one document in /editor, each in a Chromium context of
// their own (Debian's /usr/bin/chromium, driven by playwright-core from
// tests/browser/node_modules).
//
//   node editor.mjs BASE DOC [--scenario pair|offline|readonly] [--secret S] [--screenshot FILE.png]
//
// pair (default): both type; each sees the other's text, the other's cursor
//   with their name (y-codemirror.next's .cm-ySelectionInfo) and the other in
//   the list of people; the status says Connected.
// offline: Bob's page loses its connection (its provider disconnects), the
//   status says so, both type meanwhile; once Bob is back both pages show
//   both edits.
// readonly: Rita opens the page with a read-only token (HS256 with S): the
//   page says Read-only, typing changes nothing, Ann's edits arrive.
//
// Prints one JSON line; exits 0 when ok.
import { createRequire } from 'node:module'

const require = createRequire(new URL('../browser/package.json', import.meta.url))
const { chromium } = require('playwright-core')

const WAIT_MS = 15000
const LIMIT_MS = 60000
const [base, doc, ...rest] = process.argv.slice(2)
const flag = (name) => {
  const i = rest.indexOf(name)
  return i >= 0 ? rest[i + 1] : null
}
const screenshot = flag('--screenshot')
const scenario = flag('--scenario') || 'pair'
const secret = flag('--secret')

async function main (browser, errors) {
  const open = async (name, query = '') => {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } })
    const page = await context.newPage()
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') errors.push(`${name}: ${m.text()}`) })
    page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`))
    await page.goto(`${base.replace(/\/$/, '')}/editor?doc=${encodeURIComponent(doc)}&name=${name}${query}`)
    await page.waitForSelector('#status[data-sync="synced"]', { timeout: WAIT_MS })
    return page
  }
  if (scenario === 'offline') return offline(open)
  if (scenario === 'readonly') return readonly(open)
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

const textOf = (page) => page.evaluate(() => window.duplexEditor.ytext.toString())
const waitText = (page, parts) => page.waitForFunction((parts) => {
  const t = window.duplexEditor.ytext.toString()
  return parts.every((p) => t.includes(p)) && window.duplexEditor.view.state.doc.toString() === t
}, parts, { timeout: WAIT_MS })

async function offline (open) {
  const ann = await open('Ann')
  const bob = await open('Bob')
  await ann.click('.cm-content')
  await ann.keyboard.type('Before. ', { delay: 10 })
  await waitText(bob, ['Before. '])
  await bob.evaluate(() => window.duplexEditor.provider.disconnect())
  await bob.waitForSelector('#status[data-sync="disconnected"]', { timeout: WAIT_MS })
  const statusOffline = await bob.textContent('#status-text')
  await bob.click('.cm-content')
  await bob.keyboard.press('Control+End')
  await bob.keyboard.type('Bob offline.', { delay: 10 })
  await ann.keyboard.type('Ann online. ', { delay: 10 })
  const annSawBobEarly = (await textOf(ann)).includes('Bob offline.')
  await bob.evaluate(() => window.duplexEditor.provider.connect())
  await bob.waitForSelector('#status[data-sync="synced"]', { timeout: WAIT_MS })
  const parts = ['Before. ', 'Bob offline.', 'Ann online. ']
  await waitText(ann, parts)
  await waitText(bob, parts)
  if (screenshot) await bob.screenshot({ path: screenshot, fullPage: true })
  const report = {
    status_offline: statusOffline,
    status_back: await bob.textContent('#status-text'),
    ann_saw_bob_while_offline: annSawBobEarly,
    ann: await textOf(ann),
    bob: await textOf(bob)
  }
  report.converged = report.ann === report.bob && !annSawBobEarly
  return report
}

async function readonly (open) {
  const { createHmac } = await import('node:crypto')
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url')
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'rita', docs: { '*': 'read' } })}`
  const token = `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`
  const ann = await open('Ann')
  const rita = await open('Rita', `&token=${token}`)
  await ann.click('.cm-content')
  await ann.keyboard.type('Only Ann writes. ', { delay: 10 })
  await waitText(rita, ['Only Ann writes. '])
  await rita.click('.cm-content')
  await rita.keyboard.type('Rita tries.', { delay: 10 })
  // Ann's next edit arrives after anything Rita could have sent.
  await ann.keyboard.type('Again.', { delay: 10 })
  await waitText(rita, ['Again.'])
  await waitText(ann, ['Again.'])
  if (screenshot) await rita.screenshot({ path: screenshot, fullPage: true })
  const report = {
    badge: await rita.isVisible('#access'),
    ann: await textOf(ann),
    rita: await textOf(rita)
  }
  report.converged = report.ann === report.rita && !report.rita.includes('Rita')
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
