"""Write data/sample/qa.jsonl: questions on the sample corpus with answers, evidence sentences and key facts."""
import json
from pathlib import Path
L="korvik_lighthouse.md"; G="green_tea.txt"; T="tidy_t3_manual.html"; M="marmot_field_notes.pdf"
rows=[
 (L,"When was the Korvik Island Lighthouse first lit?","14 March 1887","The Korvik Island Lighthouse was first lit on 14 March 1887.",["1887"]),
 (L,"Who designed the Korvik Island Lighthouse?","Halvard Brekke","It was designed by the engineer Halvard Brekke",["Brekke"]),
 (L,"How tall is the Korvik lighthouse tower?","31 metres","The tower is 31 metres tall",["31"]),
 (L,"Who was the first keeper of the Korvik lighthouse?","Ingrid Solberg","The first keeper was Ingrid Solberg",["Solberg"]),
 (L,"How far away can the Korvik light be seen in clear weather?","19 nautical miles","In clear weather it can be seen from 19 nautical miles away.",["19"]),
 (L,"How many steps lead to the gallery of the Korvik lighthouse?","142 steps","Visitors may climb the 142 steps to the gallery",["142"]),
 (L,"How often is the Korvik lighthouse lens cleaned?","Every Monday","The lens is cleaned every Monday with distilled water and a soft linen cloth",["Monday"]),
 (G,"Which plant does all true tea come from?","Camellia sinensis","All true tea comes from one plant, Camellia sinensis.",["Camellia sinensis"]),
 (G,"How are Japanese green teas such as sencha usually fixed?","By steaming for thirty to sixty seconds","Japanese teas such as sencha are usually steamed for thirty to sixty seconds",["steam"]),
 (G,"At what water temperature should green tea be brewed?","Around 70 to 80 degrees Celsius","Green tea is best brewed with water well below boiling, around 70 to 80 degrees Celsius",["70","80"]),
 (G,"Which amino acid gives spring green tea its umami taste?","L-theanine","the young leaves hold more amino acids, chiefly L-theanine",["theanine"]),
 (T,"How long should the Tidy T3 charge before its first run?","At least four hours","Charge the Tidy T3 for at least four hours before its first run.",["four hours"]),
 (T,"What does a blinking red light on the Tidy T3 mean?","A wheel or the main brush is stuck","Blinking red A wheel or the main brush is stuck",["stuck"]),
 (T,"How much does the Tidy T3 dust bin hold?","0.4 litres","Empty the dust bin after every run; it holds 0.4 litres.",["0.4"]),
 (T,"How long is the Tidy T3 warranty?","Two years","The Tidy T3 has a two-year warranty.",["two-year|two year"]),
 (T,"Which Wi-Fi networks can the Tidy T3 join?","Only 2.4 GHz networks","The robot only joins 2.4 GHz Wi-Fi networks.",["2.4"]),
 (M,"How long do Alpine marmots hibernate?","About six months, from October to April","Alpine marmots hibernate for about six months, from October to April",["six months|6 months"]),
 (M,"What does a single sharp marmot whistle warn of?","An eagle or another threat from the air","A single sharp whistle warns of an eagle or another threat from the air",["eagle"]),
 (M,"How much does an adult Alpine marmot weigh?","Three to seven kilograms","Adults weigh three to seven kilograms",["seven kilograms"]),
 (M,"What is the gestation period of the Alpine marmot?","About 33 days","Young marmots are born in the burrow after a gestation of about 33 days",["33"]),
 (None,"What is the opening time of the Korvik lighthouse gift shop on Sundays?","","",[]),
 (None,"What colour is the Tidy T3 docking station's power cable?","","",[]),
]
with open(Path(__file__).resolve().parent.parent / "data/sample/qa.jsonl", "w") as f:
  for i,(src,q,a,ev,facts) in enumerate(rows,1):
    f.write(json.dumps({"id":f"q{i:02d}","question":q,"answer":a,"evidence":ev,"source":src,"facts":facts,"answerable":src is not None})+"\n")
