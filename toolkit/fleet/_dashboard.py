# ruff: noqa: E501
"""The dashboard page: static HTML whose script polls ``/api/devices`` every 2 s and redraws the table."""

DASHBOARD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgekws fleet</title>
<style>
 body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
 table{border-collapse:collapse;min-width:60em} th,td{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left}
 th{background:#f3f3f3} .online{color:#08730b;font-weight:600} .offline{color:#b00020;font-weight:600}
 .alert{background:#fff3f3;border-left:4px solid #b00020;padding:.3em .6em;margin:.2em 0}
 small{color:#666}
</style></head><body>
<h1>edgekws fleet</h1>
<div id="alerts"></div>
<table id="devices"><thead><tr><th>fleet</th><th>device</th><th>group</th><th>status</th><th>bundle</th><th>backend</th>
<th>det/min</th><th>p50 ms</th><th>p95 ms</th><th>energy mJ/inf</th><th>mJ/audio s</th><th>method</th><th>queue</th><th>last seen</th>
</tr></thead><tbody></tbody></table>
<p><small id="meta">loading…</small></p>
<script>
function cell(v){const td=document.createElement('td');td.textContent=(v===null||v===undefined)?'–':v;return td}
function num(v,d){return (v===null||v===undefined)?null:Number(v).toFixed(d)}
async function refresh(){
  try{
    const r=await fetch('/api/devices',{cache:'no-store'}); const s=await r.json();
    const tb=document.querySelector('#devices tbody'); tb.replaceChildren();
    for(const d of s.devices){
      const tr=document.createElement('tr'); tr.className='device'; tr.dataset.device=d.fleet+'/'+d.device;
      const st=cell(d.online===null?'unknown':(d.online?'online':'offline'));
      st.className=d.online?'online':'offline';
      const age=d.last_seen?Math.round(s.time-d.last_seen)+' s ago':null;
      const group=d.group||(d.reported_group?'('+d.reported_group+'?)':null);
      tr.append(cell(d.fleet),cell(d.device),cell(group),st,cell(d.bundle?d.bundle.name+' '+d.bundle.version:null),
        cell(d.backend),cell(d.detections_per_minute),cell(num(d.latency_p50_ms,3)),cell(num(d.latency_p95_ms,3)),
        cell(num(d.energy_mj,4)),cell(num(d.energy_mj_per_audio_s,4)),cell(d.energy_method),cell(d.queue_depth),cell(age));
      tb.append(tr);
    }
    const al=document.getElementById('alerts'); al.replaceChildren();
    for(const a of s.alerts){const p=document.createElement('div');p.className='alert';p.textContent=a.message;al.append(p)}
    document.getElementById('meta').textContent=s.devices.length+' devices · '+
      Object.values(s.counts.messages).reduce((a,b)=>a+b,0)+' messages · '+s.counts.duplicates+' duplicates · '+
      s.counts.invalid+' invalid · '+
      'updated '+new Date(s.time*1000).toLocaleTimeString();
  }catch(e){document.getElementById('meta').textContent='monitor unreachable: '+e}
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
