// The page's script (bundled by server.js with esbuild): joins a room with @anycable/web, shows messages
// and who is online, and sends what you type with `perform('speak')`.
import { createCable } from '@anycable/web'

const $ = (id) => document.getElementById(id)
const cableUrl = document.querySelector('meta[name="cable-url"]').content

let cable = null
let channel = null

function show (element, text, className) {
  const li = document.createElement('li')
  if (className) li.className = className
  li.append(text)
  element.append(li)
  return li
}

function render (data) {
  if (data.type === 'presence') {
    $('online').replaceChildren()
    for (const name of data.online) show($('online'), name)
  } else if (data.type === 'history') {
    for (const message of data.messages) render(message)
  } else if (data.type === 'message') {
    const li = show($('messages'), '', 'message')
    const from = document.createElement('span')
    from.className = 'from'
    from.textContent = data.from
    li.append(from, data.text)
    $('messages').scrollTop = $('messages').scrollHeight
  }
}

$('join-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const name = $('name').value.trim()
  const room = $('room').value.trim()
  if (!name || !room) return
  if (cable) cable.disconnect()
  $('messages').replaceChildren()
  $('online').replaceChildren()
  cable = createCable(`${cableUrl}?name=${encodeURIComponent(name)}`, { protocol: 'actioncable-v1-json' })
  cable.on('connect', () => { $('status').textContent = `connected as ${name}` })
  cable.on('disconnect', () => { $('status').textContent = 'reconnecting…' })
  cable.on('close', () => { $('status').textContent = 'disconnected' })
  channel = cable.subscribeTo('ChatChannel', { room })
  channel.on('message', render)
  channel.ensureSubscribed().then(() => {
    $('status').textContent = `connected as ${name} in #${room}`
    $('message-form').hidden = false
    $('message').focus()
  })
})

$('message-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const text = $('message').value.trim()
  if (!text || !channel) return
  channel.perform('speak', { text })
  $('message').value = ''
})
